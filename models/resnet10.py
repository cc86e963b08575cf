"""ResNet-10 lesion classifier, with an optional metadata branch (seed 000's network).

Image trunk: torchvision ``ResNet(BasicBlock, [1, 1, 1, 1])`` without its fc layer (512-d after
global average pooling). The multimodal variant fuses it with a small MLP over the encoded metadata
(``models.metadata``); the image-only variant has the same trunk and a head of the same shape.
Both return logits ``[N, num_classes]``; class 1 is "malignant".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from .metadata import METADATA_DIM, missing_metadata

__all__ = [
    "ARCHS",
    "ResNet10",
    "build_model",
    "resnet10_image",
    "resnet10_multimodal",
]

TRUNK_FEATURES = 512
HIDDEN = 128
METADATA_FEATURES = 64
DROPOUT = 0.5


def _trunk() -> nn.Module:
    trunk = ResNet(BasicBlock, [1, 1, 1, 1])
    trunk.fc = nn.Identity()
    return trunk


def _head(in_features: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(DROPOUT),
        nn.Linear(HIDDEN, num_classes),
    )


class ResNet10(nn.Module):
    """ResNet-10 trunk + classification head; ``with_metadata=False`` makes it image-only.

    ``forward(images, metadata=None)``: both variants accept metadata so callers need not branch.
    The image-only variant ignores it; the multimodal one treats None as "all fields missing".
    """

    def __init__(self, *, num_classes: int = 2, with_metadata: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.arch = "resnet10_multimodal" if with_metadata else "resnet10_image"
        self.metadata_dim = METADATA_DIM if with_metadata else 0
        self.trunk = _trunk()
        if with_metadata:
            self.metadata_branch: nn.Module | None = nn.Sequential(
                nn.Linear(METADATA_DIM, HIDDEN),
                nn.ReLU(inplace=True),
                nn.Dropout(DROPOUT),
                nn.Linear(HIDDEN, METADATA_FEATURES),
                nn.ReLU(inplace=True),
            )
            # Not persistent: it is derived from the encoding, so checkpoints hold weights only.
            missing = torch.from_numpy(missing_metadata(1))
            self.register_buffer("missing_metadata", missing, persistent=False)
            self.head = _head(TRUNK_FEATURES + METADATA_FEATURES, num_classes)
        else:
            self.metadata_branch = None
            self.head = _head(TRUNK_FEATURES, num_classes)

    def forward(
        self, images: Tensor, metadata: Tensor | None = None, *, with_features: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits; with ``with_features=True`` also the 512-d image-trunk features (training)."""
        features = self.trunk(images)
        logits = self._classify(images, features, metadata)
        return (logits, features) if with_features else logits

    def _classify(self, images: Tensor, features: Tensor, metadata: Tensor | None) -> Tensor:
        if self.metadata_branch is None:
            return self.head(features)
        if metadata is None:
            metadata = self.missing_metadata.expand(images.shape[0], -1)
        elif metadata.shape != (images.shape[0], self.metadata_dim):
            raise ValueError(
                f"metadata must have shape [{images.shape[0]}, {self.metadata_dim}], "
                f"got {list(metadata.shape)}"
            )
        meta = self.metadata_branch(metadata.to(features.dtype))
        return self.head(torch.cat([features, meta], dim=1))


def resnet10_multimodal(*, num_classes: int = 2) -> ResNet10:
    """ResNet-10 image trunk fused with the metadata branch (age, sex, site)."""
    return ResNet10(num_classes=num_classes, with_metadata=True)


def resnet10_image(*, num_classes: int = 2) -> ResNet10:
    """ResNet-10 on images alone; ``forward`` ignores any metadata it is given."""
    return ResNet10(num_classes=num_classes, with_metadata=False)


_BUILDERS = {
    "resnet10_multimodal": resnet10_multimodal,
    "resnet10_image": resnet10_image,
}
ARCHS: tuple[str, ...] = tuple(_BUILDERS)


def build_model(arch: str, *, num_classes: int = 2) -> ResNet10:
    """A freshly initialised network by architecture name (one of ``ARCHS``)."""
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}") from None
    return builder(num_classes=num_classes)
