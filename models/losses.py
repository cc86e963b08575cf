"""Focal loss for two-class logits (Lin et al., 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FocalLoss", "focal_loss"]


def focal_loss(logits: Tensor, target: Tensor, *, alpha: float = 0.5, gamma: float = 2.0) -> Tensor:
    """Mean focal loss; ``alpha`` weights class 1 (malignant) and ``1 - alpha`` class 0.

    With ``gamma=0`` and ``alpha=0.5`` this is half the cross-entropy.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    p_true = torch.exp(-ce)
    weight = torch.where(target == 1, alpha, 1.0 - alpha)
    return (weight * (1.0 - p_true).pow(gamma) * ce).mean()


class FocalLoss(nn.Module):
    """``focal_loss`` as a module, for symmetry with ``nn.CrossEntropyLoss``."""

    def __init__(self, *, alpha: float = 0.5, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, alpha=self.alpha, gamma=self.gamma)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"
