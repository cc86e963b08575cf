"""birthmark models: networks, metadata encoding, image decoding, checkpoints, inference, training.

A plain library (torch, torchvision, numpy, Pillow, scikit-learn); it never imports workers, celery,
redis or boto3. The public API below is what ``workers`` calls (see CONTRACTS.md).
"""

from __future__ import annotations

from .augment import PhoneCaptureAugment, phone_capture_augment
from .cache import DecodedImageCache
from .checkpoint import CLASSES, ChecksumError, dump_checkpoint, load_checkpoint
from .cpus import available_cpus
from .evaluation import (
    auc_interval,
    evaluate,
    fit_calibration,
    fit_temperature,
    paired_auc_difference,
)
from .imageio import DecodedImage, ImageError, decode_image, to_rgb
from .losses import FocalLoss, focal_loss
from .metadata import METADATA_DIM, SITES, encode_metadata, metadata_problems
from .predictor import Predictor, resolve_device, set_threads
from .preprocess import (
    COLOUR_CONSTANCY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    colour_constancy,
    to_batch,
    to_tensor,
)
from .quality import assess_quality
from .report import render_report
from .resnet10 import ARCHS, ResNet10, build_model, resnet10_image, resnet10_multimodal
from .training import EpochState, Sample, TrainConfig, TrainingStopped, TrainResult, fit

__all__ = [
    "ARCHS",
    "CLASSES",
    "COLOUR_CONSTANCY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METADATA_DIM",
    "SITES",
    "ChecksumError",
    "DecodedImage",
    "DecodedImageCache",
    "EpochState",
    "FocalLoss",
    "ImageError",
    "PhoneCaptureAugment",
    "Predictor",
    "ResNet10",
    "Sample",
    "TrainConfig",
    "TrainResult",
    "TrainingStopped",
    "assess_quality",
    "available_cpus",
    "auc_interval",
    "build_model",
    "colour_constancy",
    "decode_image",
    "dump_checkpoint",
    "encode_metadata",
    "evaluate",
    "fit",
    "fit_calibration",
    "fit_temperature",
    "focal_loss",
    "load_checkpoint",
    "metadata_problems",
    "paired_auc_difference",
    "phone_capture_augment",
    "render_report",
    "resnet10_image",
    "resnet10_multimodal",
    "resolve_device",
    "set_threads",
    "to_batch",
    "to_rgb",
    "to_tensor",
]
