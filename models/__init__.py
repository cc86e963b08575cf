"""birthmark models: networks, metadata encoding, image decoding, checkpoints, inference, training.

A plain library (torch, torchvision, numpy, Pillow, scikit-learn); it never imports workers, celery,
redis or boto3. The public API below is what ``workers`` calls (see CONTRACTS.md).
"""

from __future__ import annotations

import lazy_loader

# Submodules load on first use (SPEC 1 lazy loading): ``import models`` costs nothing, so a CLI
# command that only decodes a preview does not start torch (~3 s) and torchvision (~2.5 s more).
# EAGER_IMPORT=1 in the environment loads everything at once (import errors surface early).
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "augment": ["PhoneCaptureAugment", "phone_capture_augment"],
        "cache": ["DecodedImageCache"],
        "checkpoint": ["CLASSES", "ChecksumError", "dump_checkpoint", "load_checkpoint"],
        "cpus": ["available_cpus"],
        "evaluation": [
            "auc_interval",
            "evaluate",
            "fit_calibration",
            "fit_temperature",
            "paired_auc_difference",
        ],
        "imageio": ["DecodedImage", "ImageError", "decode_image", "to_rgb"],
        "losses": ["FocalLoss", "focal_loss"],
        "metadata": ["METADATA_DIM", "SITES", "encode_metadata", "metadata_problems"],
        "predictor": ["Predictor", "resolve_device", "set_threads"],
        "preprocess": [
            "COLOUR_CONSTANCY",
            "IMAGENET_MEAN",
            "IMAGENET_STD",
            "colour_constancy",
            "to_batch",
            "to_tensor",
        ],
        "quality": ["assess_quality"],
        "report": ["render_report"],
        "resnet10": ["ARCHS", "ResNet10", "build_model", "resnet10_image", "resnet10_multimodal"],
        "training": [
            "EpochState",
            "Sample",
            "TrainConfig",
            "TrainingStopped",
            "TrainResult",
            "fit",
        ],
    },
)
