"""Does dermoscopic training transfer to phone photos? Four variants on the same splits and budget.

    python -m benchmarks.transfer --data ../shared/data --budget-min 4 [--image-size 128]

(a) dermoscopic images only, no phone-capture augmentation (seed 001's setup)
(b) (a) + phone-capture augmentation
(c) (b) + the phone images of the train split
(d) (c) with the metadata branch (resnet10_multimodal; a-c use resnet10_image)
(e) (d) + shades-of-gray colour constancy at training and scoring time
(f) (e) + the auxiliary diagnosis-group loss (``TrainConfig.aux_diagnosis_weight``)
(g) (f) with the phone-capture augmentation at strength 0.3 instead of 1.0 (today's default)

Splits come from ``curation.assign_splits`` (patient_id, else lesion_id), so the test phone photos
are of patients never seen in training. Every variant gets the same compute budget, counted in
training images rather than wall seconds (the CPU is shared, so wall time is noise):
``--budget-min`` minutes at ``--speed`` img/s (default: measured once, up front), divided by the
variant's training set size, gives its epochs; StepLR halves the learning rate every third of the
run. Images are decoded once into memory at the training size. Metrics on the phone and the
dermoscopic test split: ROC AUC, sensitivity at 90% specificity and ECE of the calibrated
probabilities (temperature and logit bias fitted on val by ``models.fit``). Writes a markdown table
into ``benchmarks/transfer_results.md`` (between the results markers) and a plot to
``benchmarks/transfer.png`` (generated, not committed).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

import models
from models.training import _Batcher, _batches

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "transfer_results.md"
PLOT = Path(__file__).resolve().parent / "transfer.png"
START, END = "<!-- results:start -->", "<!-- results:end -->"
META_FIELDS = ("age_approx", "sex", "anatom_site_general")

# key: (name, arch, phone-capture augment strength (0 = off), phone train images,
#       colour constancy, aux weight)
MM, SOG = "resnet10_multimodal", "shades_of_gray"
VARIANTS = {
    "a": ("dermoscopic only, no phone aug", "resnet10_image", 0.0, False, "none", 0.0),
    "b": ("+ phone-capture aug", "resnet10_image", 1.0, False, "none", 0.0),
    "c": ("+ phone train images", "resnet10_image", 1.0, True, "none", 0.0),
    "d": ("+ metadata branch", MM, 1.0, True, "none", 0.0),
    "e": ("+ colour constancy", MM, 1.0, True, SOG, 0.0),
    "f": ("+ diagnosis-group aux loss", MM, 1.0, True, SOG, 0.5),
    "g": ("(f) with milder aug (0.3): default", MM, 0.3, True, SOG, 0.5),
}


def load_table(data: Path) -> pd.DataFrame:
    import curation  # here, not at the top: the recipe sweep runs where isic-cli is not installed

    df = curation.read_labelled_manifest(data / "manifest.csv")
    df = df[df["malignant"].notna()].copy()
    df["split"] = curation.assign_splits(df)
    return df.reset_index(drop=True)


def decode_all(data: Path, files: pd.Series, *, size: int) -> list[Image.Image]:
    """Each image once, short side ``size``: later epochs only crop, augment and normalise."""
    images = []
    for name in files:
        with Image.open(data / name) as image:
            image = image.convert("RGB")
            scale = size / min(image.size)
            if scale < 1:
                new = (round(image.width * scale), round(image.height * scale))
                image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0)
            images.append(image)
    return images


def _metadata(row: dict) -> dict:
    return {
        f: None if (isinstance(row[f], float) and math.isnan(row[f])) else row[f]
        for f in META_FIELDS
    }


def make_samples(rows: pd.DataFrame, images: list[Image.Image]) -> list[models.Sample]:
    return [
        models.Sample(
            (lambda im=images[i]: im),
            int(r["malignant"]),
            _metadata(r),
            r.get("patient_id"),
            r.get("diagnosis"),
        )
        for i, r in zip(rows.index, rows.to_dict("records"), strict=True)
    ]


def measure_speed(samples: list[models.Sample], config: models.TrainConfig, *, steps: int = 4):
    """Training images per second of this config (augmentation + forward + backward)."""
    model = models.build_model(config.arch).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    meta = models.encode_metadata([s.metadata for s in samples])
    batcher = _Batcher(samples, meta, config)
    order = np.random.default_rng(0).permutation(len(samples))[: config.batch_size * (steps + 1)]
    model.train()
    began = None
    for b, (x, m, y, _) in enumerate(batcher.iterate(_batches(order, config.batch_size), "speed")):
        if b == 1:  # the first step pays one-off allocation costs
            began = time.perf_counter()
        loss = models.focal_loss(model(x.contiguous(memory_format=torch.channels_last), m), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return config.batch_size * steps / (time.perf_counter() - began)


def run_variant(key, table, images, base: models.TrainConfig, budget_images: float):
    name, arch, strength, with_phone, constancy, aux_weight = VARIANTS[key]
    train = table[(table["split"] == "train") & (with_phone | (table["kind"] == "dermoscopic"))]
    val = table[(table["split"] == "val") & (with_phone | (table["kind"] == "dermoscopic"))]
    train_samples = make_samples(train, images)
    config = replace(
        base,
        arch=arch,
        augment=strength > 0,
        augment_strength=strength or 1.0,
        colour_constancy=constancy,
        aux_diagnosis_weight=aux_weight,
    )
    epochs = max(1, round(budget_images / len(train_samples)))
    config = replace(config, epochs=epochs)  # StepLR steps every third of the run
    print(
        f"[{key}] {name}: {len(train_samples)} train ({int(train['malignant'].sum())} malignant), "
        f"{len(val)} val -> {epochs} epochs",
        flush=True,
    )
    began = time.perf_counter()
    result = models.fit(
        train_samples,
        make_samples(val, images),
        config=config,
        on_epoch=lambda s: print(
            f"    epoch {s.epoch}/{s.epochs} loss {s.train_loss:.4f} val_auc {s.val_auc:.3f} "
            f"{s.images_per_second:.0f} img/s {s.seconds:.0f}s",
            flush=True,
        ),
    )
    seconds = time.perf_counter() - began
    predictor = models.Predictor(result.model, result.card, device="cpu")
    row = {
        "variant": f"({key}) {name}",
        "epochs": epochs,
        "train_min": seconds / 60,
        "img_s": result.card["images_per_second"],
        "temperature": result.card["temperature"],
        "logit_bias": result.card["logit_bias"],
    }
    for kind in ("phone", "dermoscopic"):
        test = table[(table["split"] == "test") & (table["kind"] == kind)]
        prob = predictor.predict(
            [images[i] for i in test.index], [_metadata(r) for r in test.to_dict("records")]
        )
        metrics = models.evaluate(test["malignant"].astype(int).to_numpy(), prob)
        row |= {f"{kind}_{m}": metrics[m] for m in ("roc_auc", "sens_at_spec_90", "ece", "n")}
        row[f"{kind}_n_pos"] = metrics["n_pos"]
    print(
        f"    phone AUC {row['phone_roc_auc']:.3f} derm AUC {row['dermoscopic_roc_auc']:.3f} "
        f"ECE {row['phone_ece']:.3f}/{row['dermoscopic_ece']:.3f} in {seconds / 60:.1f} min",
        flush=True,
    )
    return row


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| variant | epochs | train min | img/s | phone AUC | phone sens@90spec | phone ECE "
        "| derm AUC | derm sens@90spec | derm ECE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['epochs']} | {r['train_min']:.1f} | {r['img_s']:.0f} "
            f"| {r['phone_roc_auc']:.3f} | {r['phone_sens_at_spec_90']:.3f} | {r['phone_ece']:.3f} "
            f"| {r['dermoscopic_roc_auc']:.3f} | {r['dermoscopic_sens_at_spec_90']:.3f} "
            f"| {r['dermoscopic_ece']:.3f} |"
        )
    r = rows[0]
    lines += [
        "",
        f"Test split: {r['phone_n']} phone photos ({r['phone_n_pos']} malignant), "
        f"{r['dermoscopic_n']} dermoscopic ({r['dermoscopic_n_pos']} malignant).",
    ]
    return "\n".join(lines)


def write_results(text: str, path: Path = RESULTS) -> None:
    block = f"{START}\n{text}\n{END}"
    old = path.read_text() if path.exists() else f"# Transfer to phone photos\n\n{START}\n{END}\n"
    if START in old and END in old:
        head, rest = old.split(START, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def plot(rows: list[dict], path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for offset, kind in ((-0.2, "phone"), (0.2, "dermoscopic")):
        ax.bar(x + offset, [r[f"{kind}_roc_auc"] for r in rows], 0.4, label=kind)
    ax.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, [r["variant"].split(")")[0] + ")" for r in rows])
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("test ROC AUC")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget-min", type=float, default=4.0, help="training minutes/variant")
    parser.add_argument(
        "--speed", type=float, default=None, help="img/s the budget assumes (default: measured)"
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--variants", default="abcdefg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    data = args.data.resolve()
    if not (data / "manifest.csv").is_file():
        raise SystemExit(f"no manifest.csv under {data}; pass --data PATH")
    models.set_threads(args.threads)

    table = load_table(data)
    began = time.perf_counter()
    images = decode_all(data, table["file"], size=args.image_size)
    print(f"decoded {len(images)} images in {time.perf_counter() - began:.1f}s", flush=True)
    print(table.groupby(["kind", "split"])["malignant"].agg(["size", "sum"]).to_string())
    base = models.TrainConfig(
        image_size=args.image_size,
        device="cpu",
        seed=args.seed,
    )
    speed = args.speed
    if speed is None:
        train = table[table["split"] == "train"]
        speed = measure_speed(make_samples(train, images), replace(base, arch="resnet10_image"))
    budget_images = args.budget_min * 60 * speed
    print(f"budget: {args.budget_min:g} min at {speed:.0f} img/s = {budget_images:.0f} images")
    rows = [run_variant(k, table, images, base, budget_images) for k in args.variants]
    header = (
        f"Budget {args.budget_min:g} min/variant at {speed:.0f} img/s = {budget_images:.0f} "
        f"training images per variant; {args.image_size} px, seed {args.seed}, {args.threads} "
        f"threads, load average {os.getloadavg()[0]:.1f} at the end (shared CPU)."
    )
    text = markdown(rows, header)
    print("\n" + text)
    write_results(text, args.out)
    plot(rows)
    print(f"\nwrote {args.out} and {PLOT}")


if __name__ == "__main__":
    main()
