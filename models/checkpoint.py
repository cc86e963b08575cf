"""Checkpoint format: safetensors weights + a JSON-able card that describes and fingerprints them.

Like torchvision's weight records, the card carries what a caller needs to use the weights correctly
(architecture, input size, normalisation, class names) and the sha256 of the weight bytes; loading
verifies the hash before touching the weights and never unpickles anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .metadata import METADATA_DIM
from .preprocess import IMAGENET_MEAN, IMAGENET_STD
from .resnet10 import build_model

__all__ = ["CLASSES", "ChecksumError", "dump_checkpoint", "load_checkpoint", "sha256_hex"]

CLASSES = ["benign", "malignant"]


class ChecksumError(ValueError):
    """The weight bytes do not match the sha256 recorded in their card."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump_checkpoint(model: nn.Module, card: Mapping) -> tuple[bytes, dict]:
    """Serialise ``model``'s weights; returns ``(safetensors_bytes, card)``.

    The returned card is a copy of ``card`` completed with defaults (arch, num_classes, image_size,
    mean, std, classes, metadata_dim, temperature, logit_bias) and always-fresh ``sha256`` and
    ``created_at``.
    ``card["arch"]`` is required when the model does not say which builder made it.
    """
    arch = card.get("arch") or getattr(model, "arch", None)
    if not arch:
        raise ValueError("card must name the model's 'arch' (one of models.ARCHS)")
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    weights = save_safetensors(state, metadata={"arch": arch})
    full = {
        "arch": arch,
        "num_classes": getattr(model, "num_classes", 2),
        "image_size": 224,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "classes": list(CLASSES),
        "metadata_dim": getattr(model, "metadata_dim", METADATA_DIM),
        "temperature": 1.0,
        "logit_bias": 0.0,
        **dict(card),
        "format": "safetensors",
        "sha256": sha256_hex(weights),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return weights, full


def load_checkpoint(
    weights: bytes, card: Mapping, *, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the network named by ``card`` and load ``weights`` into it (eval mode).

    Raises ``ChecksumError`` when ``sha256(weights)`` differs from ``card["sha256"]``.
    """
    expected = card.get("sha256")
    actual = sha256_hex(weights)
    if not expected or actual != expected:
        raise ChecksumError(f"weights sha256 {actual} does not match card sha256 {expected!r}")
    model = build_model(card["arch"], num_classes=int(card.get("num_classes", 2)))
    model.load_state_dict(load_safetensors(weights), strict=True)
    return model.to(device).eval()
