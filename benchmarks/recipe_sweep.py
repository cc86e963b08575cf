"""Which training recipe transfers best? One named recipe per run, on the curated grouped splits.

    python -m benchmarks.recipe_sweep --recipe base --data ../shared/data [--device cuda]

A recipe is a set of ``models.TrainConfig`` overrides (plus ``wide``: a linear metadata logit added
to the network's output, wide-and-deep style; ``dropout``: the head/metadata-branch dropout).
Prints one ``ROW {json}`` line: val and test ROC AUC per domain (phone / dermoscopic), test AUC
with flip test-time augmentation, and ECE with one temperature vs one per domain (fitted on the
domain's val images). The same recipe gives the same numbers on CPU and GPU up to float noise, so
a GPU can search recipes that must then fit the 2-core CPU budget of ``birthmark train``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from torch import nn

import models
import models.resnet10 as resnet10
import models.training as training
from benchmarks.transfer import DEFAULT_DATA, _metadata, decode_all, load_table, make_samples
from models.evaluation import fit_temperature

# Overrides of today's TrainConfig defaults (20 epochs, aux 0.5, augmentation strength 0.3).
RECIPES: dict[str, dict] = {
    "default": {},
    "old_default": {
        "epochs": 12,
        "step_size": 4,
        "aux_diagnosis_weight": 0.0,
        "augment_strength": 1.0,
    },
    # What benchmarks/transfer_results.md quotes (run before the defaults changed).
    "e24_aux": {"epochs": 24, "step_size": 8, "augment_strength": 1.0},
    "wide": {"wide": True},
    "dropout02": {"dropout": 0.2},
    "wd005": {"weight_decay": 0.05},
    "px96_e30": {"image_size": 96, "epochs": 30},
    "focal_g1": {"focal_gamma": 1.0},
    "smoke": {"epochs": 1, "image_size": 32, "wide": True, "bn_recalibration_images": 32},
}


class WideAndDeep(nn.Module):
    """``net(images, metadata) + linear(metadata)``: a direct path for age, sex and site."""

    def __init__(self, net: resnet10.ResNet10) -> None:
        super().__init__()
        self.net = net
        self.arch = net.arch
        self.metadata_dim = net.metadata_dim
        self.wide = nn.Linear(resnet10.METADATA_DIM, net.num_classes)
        nn.init.zeros_(self.wide.weight)
        nn.init.zeros_(self.wide.bias)

    def forward(self, images, metadata=None, *, with_features=False):
        if metadata is None:
            metadata = self.net.missing_metadata.expand(images.shape[0], -1)
        logits, features = self.net(images, metadata, with_features=True)
        logits = logits + self.wide(metadata.to(logits.dtype))
        return (logits, features) if with_features else logits


def _install(recipe: dict) -> dict:
    recipe = dict(recipe)
    resnet10.DROPOUT = recipe.pop("dropout", 0.5)
    wide = recipe.pop("wide", False)
    build = resnet10.build_model
    training.build_model = (lambda arch, **kw: WideAndDeep(build(arch, **kw))) if wide else build
    return recipe


def _logits(predictor: models.Predictor, images, meta) -> np.ndarray:
    p = np.clip(predictor.predict(images, meta), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))  # temperature is 1 here: these are the raw logit differences


def _ece(y, z, t):
    return models.evaluate(y, 1 / (1 + np.exp(-z / t)))["ece"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--table", type=Path, help="precomputed table with a split column")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-logits", type=Path, help="CSV of per-image val/test logits")
    parser.add_argument("--limit", type=int, help="at most this many images per split and kind")
    args = parser.parse_args(argv)
    models.set_threads(args.threads)
    overrides = _install(RECIPES[args.recipe])
    table = pd.read_csv(args.table) if args.table else load_table(args.data.resolve())
    if args.limit:
        table = table.groupby(["split", "kind"]).head(args.limit).reset_index(drop=True)
    config = replace(
        models.TrainConfig(device=args.device, seed=args.seed, num_workers=args.num_workers),
        **overrides,
    )
    images = decode_all(args.data, table["file"], size=config.image_size)
    split = {s: table[table["split"] == s] for s in ("train", "val", "test")}
    began = time.perf_counter()
    result = models.fit(
        make_samples(split["train"], images),
        make_samples(split["val"], images),
        config=config,
        on_epoch=lambda s: print(f"  {args.recipe} epoch {s.epoch} val_auc {s.val_auc:.3f}"),
    )
    minutes = (time.perf_counter() - began) / 60
    row: dict = {"recipe": args.recipe, "seed": args.seed, "minutes": minutes}
    card = {**result.card, "temperature": 1.0}
    predictor = models.Predictor(result.model, card, device=args.device)
    z: dict = {}
    saved = []
    for s in ("val", "test"):
        for kind in ("phone", "dermoscopic"):
            rows = split[s][split[s]["kind"] == kind]
            ims = [images[i] for i in rows.index]
            meta = [_metadata(r) for r in rows.to_dict("records")]
            y = rows["malignant"].astype(int).to_numpy()
            logit = _logits(predictor, ims, meta)
            flips = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in ims]
            flop = [im.transpose(Image.Transpose.FLIP_TOP_BOTTOM) for im in ims]
            tta = (logit + _logits(predictor, flips, meta) + _logits(predictor, flop, meta)) / 3
            z[s, kind] = (y, logit)
            saved.append(rows.assign(logit=logit, logit_tta=tta))
            row[f"{s}_{kind}_auc"] = models.evaluate(y, logit)["roc_auc"]
            row[f"{s}_{kind}_auc_tta"] = models.evaluate(y, tta)["roc_auc"]
    yv = np.concatenate([z["val", k][0] for k in ("phone", "dermoscopic")])
    zv = np.concatenate([z["val", k][1] for k in ("phone", "dermoscopic")])
    t_all = fit_temperature(zv, yv)
    row["t_all"] = t_all
    for kind in ("phone", "dermoscopic"):
        t_kind = fit_temperature(z["val", kind][1], z["val", kind][0])
        y, logit = z["test", kind]
        row[f"test_{kind}_ece"] = _ece(y, logit, t_all)
        row[f"test_{kind}_ece_domain_t"] = _ece(y, logit, t_kind)
        row[f"t_{kind}"] = t_kind
    yt = np.concatenate([z["test", k][0] for k in ("phone", "dermoscopic")])
    zt = np.concatenate([z["test", k][1] for k in ("phone", "dermoscopic")])
    row["test_all_auc"] = models.evaluate(yt, zt)["roc_auc"]
    row["test_all_ece"] = _ece(yt, zt, t_all)
    if args.save_logits:
        pd.concat(saved).to_csv(args.save_logits)
    row["history"] = [round(h["val_auc"], 3) for h in result.history]
    print("ROW " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
