"""Training state as one blob: safetensors for tensors, JSON for everything else; no pickle.

The blob is a safetensors file whose tensors are the model weights (``model.<name>``) and the
optimizer's per-parameter state flattened by name (``optim.<param index>.<key>``) and, while
weights are being averaged, the running average (``average.<name>``); its string
metadata holds one JSON document with the optimizer's hyper-parameters, the scheduler and AMP
grad-scaler state, and whatever the training loop adds (epoch, history, config).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

__all__ = ["FORMAT", "pack_train_state", "restore_train_state"]

FORMAT = "birthmark-train-state/1"


def pack_train_state(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    extra: Mapping,
    average: nn.Module | None = None,
) -> bytes:
    tensors = _prefixed("model.", model.state_dict())
    if average is not None:  # the running weight average (torch.optim.swa_utils.AveragedModel)
        tensors |= _prefixed("average.", average.state_dict())
    optim = optimizer.state_dict()
    scalars: dict[str, dict[str, object]] = {}
    for index, state in optim["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    doc = {
        "format": FORMAT,
        "param_groups": optim["param_groups"],
        "optim_scalars": scalars,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "extra": dict(extra),
    }
    return save_safetensors(tensors, metadata={"state": json.dumps(doc)})


def _prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous() for k, v in state.items()}


def _unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _read(blob: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        tensors = load_safetensors(blob)
        with_meta = json.loads(_metadata(blob)["state"])
    except (SafetensorError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"not a {FORMAT} blob: {err}") from None
    if with_meta.get("format") != FORMAT:
        raise ValueError(f"expected a {FORMAT} blob, got format {with_meta.get('format')!r}")
    return tensors, with_meta


def _metadata(blob: bytes) -> dict[str, str]:
    # safetensors layout: 8-byte little-endian header length, then a JSON header.
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + size]).get("__metadata__", {})


def restore_train_state(
    blob: bytes,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    average: nn.Module | None = None,
) -> dict:
    """Load a ``pack_train_state`` blob into the given objects; returns its ``extra`` mapping."""
    tensors, doc = _read(blob)
    saved_average = _unprefixed("average.", tensors)
    if average is not None and saved_average:
        average.load_state_dict(saved_average, strict=True)
    model.load_state_dict(_unprefixed("model.", tensors), strict=True)
    state: dict[int, dict[str, object]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in doc["optim_scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in doc["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(doc["scheduler"])
    if doc["scaler"]:
        scaler.load_state_dict(doc["scaler"])
    return doc["extra"]
