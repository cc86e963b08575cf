"""The default training recipe over k grouped folds: every labelled image scored once, unseen.

    python -m benchmarks.kfold run --fold I [--folds 5] [--out DIR] [--threads 1] [--keep-model]
    python -m benchmarks.kfold rescore --out DIR --to DIR2 [--flips | --no-flips]
    python -m benchmarks.kfold summary [--out DIR] [--results FILE]

One test split of ~400 images cannot tell an ECE of 0.05 from perfect calibration (a perfectly
calibrated model measures ~0.06 there: ``ece_floor``). Here the labelled set is cut into ``--folds``
folds by patient (else lesion) with ``sklearn``'s ``StratifiedGroupKFold`` (stratified by domain and
label); run I tests on fold I, fits calibration on a grouped fifth of the rest and trains on the
remainder with ``models.TrainConfig()`` exactly as ``birthmark train`` does (80 epochs, progressive
resizing 80/96/112 px, EMA weights, test-time flips, temperature + bias on val), and writes its
calibrated test probabilities. ``summary`` pools the folds' out-of-fold probabilities (each image
appears once) and reports ECE next to its floor, ROC AUC and sensitivity at 90% specificity per
domain, pooled and per fold, into ``benchmarks/kfold_results.md``. Folds are independent processes:
run two at a time with ``--threads 1`` on a 2-core machine. ``--recipe`` trains one of
``benchmarks.recipe_sweep``'s recipes instead (with ``--device cuda --num-workers 3`` on a GPU), so
recipes can be compared on all 2,752 images rather than on one 406-image split; give each recipe and
seed its own ``--out``.
``--keep-model`` also writes each fold's weights and card, and ``rescore`` scores the test folds
again with them (with or without test-time flips), so inference-time variants need no retraining.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

import models
from benchmarks.recipe_sweep import RECIPES, _install
from benchmarks.transfer import DEFAULT_DATA, _metadata, decode_all, load_table, make_samples
from curation.splits import assign_splits, split_group_keys

RESULTS = Path(__file__).resolve().parent / "kfold_results.md"
DEFAULT_OUT = Path("kfold-runs")
DOMAINS = ("phone", "dermoscopic")
VAL_FRACTION = 0.15 / 0.8  # of the rest: 15% of all images, as in a curated version


def assign_folds(table: pd.DataFrame, folds: int, *, seed: int = 0) -> pd.DataFrame:
    """``group`` and ``fold`` (the fold whose test split holds the row) columns.

    Groups (patient, else lesion) never straddle folds; strata are domain x label, so every fold
    has phone and dermoscopic malignant cases in about the dataset's proportions.
    """
    groups = split_group_keys(table).to_numpy()
    strata = (table["kind"] + ":" + table["malignant"].astype(int).astype(str)).to_numpy()
    out = table.assign(group=groups, fold=-1)
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for f, (_, test) in enumerate(outer.split(table, strata, groups)):
        out.loc[out.index[test], "fold"] = f
    return out


def split_for(folded: pd.DataFrame, fold: int) -> dict[str, pd.DataFrame]:
    """Test = the fold; val = 15% of all images drawn from the rest by group, as curation does."""
    rest = folded[folded["fold"] != fold]
    inner = assign_splits(
        rest, fractions=(1 - VAL_FRACTION, VAL_FRACTION, 0.0), salt=f"kfold-{fold}"
    )
    return {
        "train": rest[inner == "train"],
        "val": rest[inner == "val"],
        "test": folded[folded["fold"] == fold],
    }


def run_fold(args: argparse.Namespace) -> Path:
    models.set_threads(args.threads)
    data = args.data.resolve()
    # What fixes the fold assignment; recorded in the fold's JSON so `rescore` can rebuild it.
    # --limit: smoke runs, a few images of each domain and label.
    assignment = {"folds": args.folds, "split_seed": args.split_seed, "limit": args.limit}
    folded = _folded(load_table(data), assignment)
    split = split_for(folded, args.fold)
    config = models.TrainConfig(device=args.device, seed=args.seed, num_workers=args.num_workers)
    if args.recipe != "default":  # a recipe of the sweep, judged on every fold instead of one split
        config = replace(config, **_install(RECIPES[args.recipe]))
    if args.epochs or args.image_size:
        config = replace(
            config,
            epochs=args.epochs or config.epochs,
            image_size=args.image_size or config.image_size,
            bn_recalibration_images=min(config.bn_recalibration_images, len(split["train"])),
        )
    images = decode_all(data, folded["file"], size=config.image_size)
    print(
        f"fold {args.fold}/{args.folds}: "
        + ", ".join(
            f"{k} {len(v)} ({int(v['malignant'].sum())} malignant)" for k, v in split.items()
        ),
        flush=True,
    )
    began = time.perf_counter()
    result = models.fit(
        make_samples(split["train"], images),
        make_samples(split["val"], images),
        config=config,
        on_epoch=lambda s: print(
            f"  fold {args.fold} epoch {s.epoch}/{s.epochs} val_auc {s.val_auc:.3f} "
            f"{s.images_per_second:.0f} img/s",
            flush=True,
        ),
    )
    minutes = (time.perf_counter() - began) / 60
    test = split["test"]
    predictor = models.Predictor(result.model, result.card, device=args.device)
    prob = predictor.predict(
        [images[i] for i in test.index], [_metadata(r) for r in test.to_dict("records")]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = test[["file", "kind", "group", "malignant", "fold"]].assign(probability=prob)
    rows.to_csv(args.out / f"fold{args.fold}.csv", index=False)
    card = result.card
    info = {
        "fold": args.fold,
        **assignment,
        "seed": args.seed,
        "recipe": args.recipe,
        "minutes": round(minutes, 2),
        "images_per_second": card.get("images_per_second"),
        "temperature": card.get("temperature"),
        "logit_bias": card.get("logit_bias"),
        "val_roc_auc": card.get("val_metrics", {}).get("roc_auc"),
        "sizes": {k: len(v) for k, v in split.items()},
    }
    (args.out / f"fold{args.fold}.json").write_text(json.dumps(info, indent=2))
    if args.keep_model:  # for re-scoring offline (test-time augmentation, calibration variants)
        weights, full_card = models.dump_checkpoint(result.model, card)
        (args.out / f"fold{args.fold}.safetensors").write_bytes(weights)
        (args.out / f"fold{args.fold}.card.json").write_text(json.dumps(full_card, indent=2))
    print(f"fold {args.fold}: {minutes:.1f} min, wrote {args.out / f'fold{args.fold}.csv'}")
    return args.out / f"fold{args.fold}.csv"


def rescore(out: Path, to: Path, data: Path, *, flips: bool) -> list[Path]:
    """Score each fold's test images again with its kept model (``run --keep-model``) into ``to``.

    ``flips`` turns test-time flips on or off (``models.Predictor``). Where that differs from what
    the fold's card was calibrated for, the temperature and bias are fitted again on the fold's val
    split scored the same way, as training would have done.
    """
    if to.resolve() == out.resolve():
        raise SystemExit(f"--to must differ from --out: rescoring {out} would overwrite its runs")
    data = data.resolve()
    table = load_table(data)
    by_file = table.set_index("file")
    to.mkdir(parents=True, exist_ok=True)
    written = []
    for part in sorted(out.glob("fold*.csv")):
        weights, card_path = part.with_suffix(".safetensors"), part.with_suffix(".card.json")
        if not weights.exists() or not card_path.exists():
            raise SystemExit(f"{part.stem} has no kept model: run it with `run --keep-model`")
        card = json.loads(card_path.read_text())
        info = json.loads(part.with_suffix(".json").read_text())
        net = models.load_checkpoint(weights.read_bytes(), card)
        if flips != bool(card.get("test_time_flips", False)):
            split = split_for(_folded(table, info), info["fold"])
            images = decode_all(data, split["val"]["file"], size=int(card["image_size"]))
            logits = models.Predictor(net, card, device="cpu", flips=flips).logits(
                images, [_metadata(r) for r in split["val"].to_dict("records")]
            )
            temperature, bias = models.fit_calibration(
                logits, split["val"]["malignant"].astype(int).to_numpy()
            )
            card = {**card, "temperature": temperature, "logit_bias": bias}
            info |= {"temperature": temperature, "logit_bias": bias}
        predictor = models.Predictor(net, card, device="cpu", flips=flips)
        rows = pd.read_csv(part)
        images = decode_all(data, rows["file"], size=int(card["image_size"]))
        metadata = [_metadata(r) for r in by_file.loc[rows["file"]].to_dict("records")]
        rows.assign(probability=predictor.predict(images, metadata)).to_csv(
            to / part.name, index=False
        )
        info["recipe"] = info.get("recipe", "default") + (
            " + test-time flips" if flips else " without test-time flips"
        )
        (to / part.with_suffix(".json").name).write_text(json.dumps(info, indent=2))
        written.append(to / part.name)
        print(f"{part.stem}: rescored {len(rows)} images into {to / part.name}", flush=True)
    return written


def _folded(table: pd.DataFrame, info: dict) -> pd.DataFrame:
    """The fold assignment a run used, from its ``fold*.json`` (runs before these keys: 0, none)."""
    if info.get("limit"):
        table = table.groupby(["kind", "malignant"]).head(info["limit"]).reset_index(drop=True)
    return assign_folds(table, info["folds"], seed=info.get("split_seed", 0))


def _metrics(rows: pd.DataFrame, *, ci_draws: int = 0) -> dict:
    y = rows["malignant"].astype(int).to_numpy()
    return models.evaluate(
        y, rows["probability"].to_numpy(), groups=rows["group"].to_numpy(), ci_draws=ci_draws
    )


def summarise(out: Path, *, ci_draws: int = 1000) -> str:
    parts = sorted(out.glob("fold*.csv"))
    if not parts:
        raise SystemExit(f"no fold*.csv under {out}: run `python -m benchmarks.kfold run` first")
    pooled = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    infos = [json.loads(p.with_suffix(".json").read_text()) for p in parts]
    folds = infos[0]["folds"]
    recipes = sorted({info.get("recipe", "default") for info in infos})
    lines = [
        f"Recipe {', '.join(recipes)}: pooled out-of-fold predictions of {len(parts)} of {folds} "
        "folds "
        f"({len(pooled)} images, each scored by the one model that never saw its patient or "
        "lesion).",
        "",
        "| images | n (malignant) | ROC AUC [95% CI] | sens@90% spec | ECE | ECE floor |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in (*((d, pooled[pooled["kind"] == d]) for d in DOMAINS), ("all", pooled)):
        m = _metrics(rows, ci_draws=ci_draws)
        lo, hi = m["roc_auc_ci"]
        lines.append(
            f"| {name} | {m['n']} ({m['n_pos']}) | {m['roc_auc']:.3f} [{lo:.3f}-{hi:.3f}] "
            f"| {m['sens_at_spec_90']:.3f} | {m['ece']:.3f} | {m['ece_floor']:.3f} |"
        )
    lines += [
        "",
        "Per fold (each its own model; ECE over the fold's whole test split):",
        "",
        "| fold | train / val / test | minutes | img/s | T | bias | val AUC | phone AUC "
        "| derm AUC | all AUC | ECE | ECE floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_fold = []
    for info, part in zip(infos, parts, strict=True):
        rows = pd.read_csv(part)
        auc = {d: _metrics(rows[rows["kind"] == d])["roc_auc"] for d in DOMAINS}
        m = _metrics(rows)
        per_fold.append((auc["phone"], auc["dermoscopic"], m["roc_auc"], m["ece"]))
        s = info["sizes"]
        lines.append(
            f"| {info['fold']} | {s['train']} / {s['val']} / {s['test']} | {info['minutes']:.1f} "
            f"| {info['images_per_second']:.0f} | {info['temperature']:.2f} "
            f"| {info['logit_bias']:+.2f} | {info['val_roc_auc']:.3f} | {auc['phone']:.3f} "
            f"| {auc['dermoscopic']:.3f} | {m['roc_auc']:.3f} | {m['ece']:.3f} "
            f"| {m['ece_floor']:.3f} |"
        )
    mean = np.mean(per_fold, axis=0)
    lines += [
        f"| mean | | | | | | | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {mean[3]:.3f} | |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kfold", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and score one fold")
    run.add_argument("--fold", type=int, required=True)
    run.add_argument("--folds", type=int, default=5)
    run.add_argument("--data", type=Path, default=DEFAULT_DATA)
    run.add_argument("--out", type=Path, default=DEFAULT_OUT)
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--device", default="cpu")
    run.add_argument("--num-workers", type=int, default=0, help="batch-preparing threads (GPU)")
    run.add_argument(
        "--recipe",
        default="default",
        choices=sorted(RECIPES),
        help="a benchmarks.recipe_sweep recipe; one --out per recipe",
    )
    run.add_argument("--seed", type=int, default=0, help="training seed")
    run.add_argument("--split-seed", type=int, default=0, help="fold assignment seed")
    run.add_argument("--epochs", type=int, help="override the default (smoke runs)")
    run.add_argument("--image-size", type=int, help="override the default (smoke runs)")
    run.add_argument("--limit", type=int, help="at most N images per domain and label (smoke)")
    run.add_argument(
        "--keep-model", action="store_true", help="also write the fold's weights and card"
    )
    again = sub.add_parser("rescore", help="score the folds again with their kept models")
    again.add_argument("--out", type=Path, default=DEFAULT_OUT)
    again.add_argument("--to", type=Path, required=True, help="where the rescored folds go")
    again.add_argument("--data", type=Path, default=DEFAULT_DATA)
    again.add_argument(
        "--flips",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score with test-time flips or without (--no-flips); recalibrates on val if needed",
    )
    again.add_argument("--threads", type=int, default=2)
    summary = sub.add_parser("summary", help="pool the folds written so far")
    summary.add_argument("--out", type=Path, default=DEFAULT_OUT)
    summary.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.command == "run":
        if not 0 <= args.fold < args.folds:
            parser.error(f"--fold must be in 0..{args.folds - 1}")
        run_fold(args)
        return
    if args.command == "rescore":
        models.set_threads(args.threads)
        rescore(args.out, args.to, args.data, flips=args.flips)
        return
    text = summarise(args.out)
    print(text)
    args.results.write_text(
        "# k-fold results of the default training recipe\n\n"
        f"`python -m benchmarks.kfold summary` — {time.strftime('%Y-%m-%d %H:%M')}\n\n{text}\n"
    )


if __name__ == "__main__":
    main()
