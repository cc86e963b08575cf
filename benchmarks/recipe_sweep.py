"""Which training recipe transfers best? One named recipe per run, on the curated grouped splits.

    python -m benchmarks.recipe_sweep --recipe default --data ../shared/data [--device cuda]

A recipe is a set of ``models.TrainConfig`` overrides (plus ``wide``: a linear metadata logit added
to the network's output, wide-and-deep style; ``dropout``: the head/metadata-branch dropout;
``crop_min_area``: the smallest area fraction the random crop keeps, whatever the augmentation
strength). Prints one ``ROW {json}`` line: val and test ROC AUC per domain (phone / dermoscopic),
test AUC with flip test-time augmentation, and ECE with one temperature vs one per domain (fitted
on the domain's val images) and with a temperature and a bias. ``--ema DECAY`` trains with
``weight_average="none"`` and scores both the last step's weights and their exponential moving
average (batch norm re-estimated; keys prefixed ``ema_``): a paired comparison in one run.
A GPU (CUDA + AMP) gives other numbers than a CPU for the same seed, so compare recipes over
seeds; what wins there must still fit the 2-core CPU budget of ``birthmark train``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

import models
import models.augment as augment
import models.resnet10 as resnet10
import models.training as training
from benchmarks.transfer import DEFAULT_DATA, _metadata, decode_all, load_table, make_samples
from models.evaluation import fit_calibration, fit_temperature

# Overrides of today's TrainConfig defaults (80 epochs, progressive 80/96/112 px, EMA weights,
# aux 0.5, augmentation strength 0.3).
RECIPES: dict[str, dict] = {
    "default": {},
    # The default until 2026-11-29 (then run as "default"; "px112_e40" was today's default).
    "e30_px128": {"epochs": 30, "image_size": 128, "weight_average": "none"},
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
    # Framing: phone photos show the lesion at any distance; strength 0.3 crops to 86-100% only.
    "crop50": {"crop_min_area": 0.5},
    "lr2e3": {"lr": 2e-3},
    # The same pixel budget as 30 epochs at 128 px, spent on more epochs at lower resolution.
    "px112_e40": {"image_size": 112, "epochs": 40},  # the default from 2026-11-29 to 2026-11-30
    # Progressive resizing: each third of the run (one StepLR phase) at its own input size, 80,
    # 96, then 112 px — the default since the k-fold runs of 2026-11-30 (made while this recipe
    # patched the training loop, which also ran the per-epoch val pass at 112 px throughout).
    "progressive": {"epochs": 80, "image_size": 112, "progressive_scales": (0.72, 0.86)},
    # The default before that: 60 epochs, every one at 112 px.
    "e60_px112": {"epochs": 60, "progressive_scales": ()},
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
    crop_min_area = recipe.pop("crop_min_area", None)
    if crop_min_area is not None:
        crop = augment._random_resized_crop
        augment._random_resized_crop = lambda image, rng, strength: crop(
            image, rng, (1 - crop_min_area) / 0.45
        )
    wide = recipe.pop("wide", False)
    build = resnet10.build_model
    training.build_model = (lambda arch, **kw: WideAndDeep(build(arch, **kw))) if wide else build
    return recipe


def _logits(predictor: models.Predictor, images, meta) -> np.ndarray:
    p = np.clip(predictor.predict(images, meta), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))  # temperature is 1 here: these are the raw logit differences


def _ece(y, z, t, b=0.0):
    return models.evaluate(y, 1 / (1 + np.exp(-(z / t + b))))["ece"]


def _track_ema(decay: float) -> list:
    """Make every AdamW step also update an EMA of its parameters; returns the shadow list.

    The same update as ``models.fit``'s ``weight_average="ema"`` (decay ramped up as
    ``(1 + n) / (10 + n)``), kept beside the last weights instead of replacing them.
    """
    shadow: list = []
    base = torch.optim.AdamW
    average = training._ema_average(decay)

    class AdamWWithEma(base):
        steps = 0

        def step(self, closure=None):
            loss = super().step(closure)
            params = [p.detach() for g in self.param_groups for p in g["params"]]
            if not shadow:
                shadow.extend(p.clone() for p in params)
            else:
                average(shadow, params, AdamWWithEma.steps)
            AdamWWithEma.steps += 1
            return loss

    torch.optim.AdamW = AdamWWithEma
    return shadow


def _ema_model(model, shadow, train, config):
    """A copy of ``model`` holding the EMA weights, with batch-norm statistics re-estimated."""
    ema = copy.deepcopy(model)
    means = shadow[: len(list(ema.parameters()))]  # the auxiliary head's parameters come last
    batcher = training._Batcher(train, models.encode_metadata([s.metadata for s in train]), config)
    labels = np.array([s.label for s in train])
    training._adopt_average(ema, means, batcher, labels, config, next(ema.parameters()).device)
    return ema.eval()


def _scores(model, card, split, images, device) -> dict:
    """Val/test AUC per domain (plain and flip TTA), T / per-domain T / T+bias ECE on test."""
    row: dict = {}
    predictor = models.Predictor(
        model, {**card, "temperature": 1.0, "logit_bias": 0.0}, device=device
    )
    z: dict = {}
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
            row[f"{s}_{kind}_auc"] = models.evaluate(y, logit)["roc_auc"]
            row[f"{s}_{kind}_auc_tta"] = models.evaluate(y, tta)["roc_auc"]
    yv = np.concatenate([z["val", k][0] for k in ("phone", "dermoscopic")])
    zv = np.concatenate([z["val", k][1] for k in ("phone", "dermoscopic")])
    t_all = fit_temperature(zv, yv)
    t_b, b = fit_calibration(zv, yv)
    row.update(t_all=t_all, t_bias=t_b, bias=b, val_all_auc=models.evaluate(yv, zv)["roc_auc"])
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
    row["test_all_ece_bias"] = _ece(yt, zt, t_b, b)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--table", type=Path, help="precomputed table with a split column")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ema", type=float, help="also score an EMA of the weights (decay)")
    parser.add_argument("--limit", type=int, help="at most this many images per split and kind")
    args = parser.parse_args(argv)
    models.set_threads(args.threads)
    overrides = _install(RECIPES[args.recipe])
    shadow = _track_ema(args.ema) if args.ema else None
    table = pd.read_csv(args.table) if args.table else load_table(args.data.resolve())
    if args.limit:
        table = table.groupby(["split", "kind"]).head(args.limit).reset_index(drop=True)
    config = replace(
        models.TrainConfig(device=args.device, seed=args.seed, num_workers=args.num_workers),
        **overrides,
    )
    if shadow is not None:
        config = replace(config, weight_average="none")  # the last weights; the hook keeps the EMA
    images = decode_all(args.data, table["file"], size=config.image_size)
    split = {s: table[table["split"] == s] for s in ("train", "val", "test")}
    began = time.perf_counter()
    train = make_samples(split["train"], images)
    result = models.fit(
        train,
        make_samples(split["val"], images),
        config=config,
        on_epoch=lambda s: print(f"  {args.recipe} epoch {s.epoch} val_auc {s.val_auc:.3f}"),
    )
    minutes = (time.perf_counter() - began) / 60
    row: dict = {"recipe": args.recipe, "seed": args.seed, "minutes": minutes}
    row.update(_scores(result.model, result.card, split, images, args.device))
    if shadow:
        ema = _ema_model(result.model, shadow, train, config)
        row.update(
            {
                f"ema_{k}": v
                for k, v in _scores(ema, result.card, split, images, args.device).items()
            }
        )
    row["history"] = [round(h["val_auc"], 3) for h in result.history if "val_auc" in h]
    print("ROW " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
