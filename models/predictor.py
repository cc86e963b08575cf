"""Batch inference: malignant probabilities for PIL images (and optional metadata)."""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .cpus import available_cpus
from .metadata import encode_metadata
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, crop_array, stack_arrays

__all__ = [
    "DEVICES",
    "Predictor",
    "fold_batchnorm",
    "forward_views",
    "resolve_device",
    "set_threads",
    "trace_frozen",
]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
FLIPS = ((3,), (2,), (2, 3))  # horizontal, vertical, both: the views test-time flips add
_threads_set: int | None = None


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'"
        )
    return torch.device(name)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count (default: every CPU this process may use, its cgroup
    quota included: :func:`~models.cpus.available_cpus`); returns the count in effect.

    Meant to be called once per worker process, before the first forward pass; later calls with the
    same count are no-ops, so callers need not track whether it already happened.
    """
    global _threads_set
    n = n or available_cpus()
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    if _threads_set != n:
        torch.set_num_threads(n)
        _threads_set = n
    return n


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm2d into the Conv2d registered just before it, in place.

    Inference then skips one memory-bound pass per convolution (about 14% faster for ResNet10 on
    CPU); outputs match to float rounding. Only valid for eval mode, so callers pass a copy.
    """
    for child in module.children():
        fold_batchnorm(child)
    names = list(module._modules)
    for conv_name, bn_name in zip(names, names[1:], strict=False):
        conv, bn = module._modules[conv_name], module._modules[bn_name]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
            module._modules[bn_name] = nn.Identity()
    return module


def trace_frozen(
    model: nn.Module, *, image_size: int, device: torch.device | str = "cpu"
) -> torch.jit.ScriptModule | None:
    """``model(images, metadata)`` traced and frozen as TorchScript, or None where that fails.

    The traced module runs a whole forward pass in C++ and takes the GIL once per call, where
    eager mode takes it back after every op: next to threads running Python (downloads, the
    Celery consumer) the eager model waits on the GIL between ops, the traced one does not.
    The trace is checked against ``model`` on a batch of another size and discarded (None,
    logged) if it fails or differs, e.g. for a forward pass whose control flow depends on values.
    TorchScript is deprecated upstream in favour of ``torch.export``; the pinned torch runs it.
    """
    model = model.eval()

    def inputs(records: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randn(len(records), 3, image_size, image_size, device=device)
        meta = torch.from_numpy(encode_metadata(records)).to(device)
        return images.contiguous(memory_format=torch.channels_last), meta

    example = inputs([{}, {"age": 50}])
    check = inputs([{"sex": "female"}, {}, {"age": 70, "anatom_site_general": "head/neck"}])
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the deprecation notice and tracer hints
            traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
            with torch.inference_mode():
                same = torch.allclose(traced(*check), model(*check), rtol=1e-4, atol=1e-5)
    except Exception as err:  # noqa: BLE001 (any tracing failure means: run eager)
        log.warning("TorchScript trace failed, scoring runs eager: %s", err)
        return None
    if not same:
        log.warning("TorchScript trace differs from the model, scoring runs eager")
        return None
    return traced


def forward_views(
    model: nn.Module,
    batch: torch.Tensor,
    meta: torch.Tensor | None,
    *,
    flips: bool,
    between: Callable[[], object] | None = None,
) -> torch.Tensor:
    """Float logits of ``model`` on ``batch``; ``flips=True``: their mean over the four flips.

    A lesion has no up or left, so the image and its horizontal, vertical and double flip are four
    views of one lesion; averaging their logits is a small ensemble at four times the inference.
    Training (for the calibration it fits on val) and scoring both go through here. ``between`` is
    called before each view after the first: the scoring worker changes its thread count there.
    """
    logits = model(batch, meta).float()
    if flips:
        for dims in FLIPS:
            if between is not None:
                between()
            logits += model(torch.flip(batch, dims), meta).float()
        logits /= 1 + len(FLIPS)
    return logits


class Predictor:
    """Wraps a network and its card for scoring: eval mode, inference mode, batching, calibration.

    ``predict`` returns the probability of class 1 ("malignant") for each image, after dividing the
    logits by ``card["temperature"]`` and adding ``card["logit_bias"]`` to class 1's (calibration
    fitted at training time; 1.0 and 0.0 when absent).
    The network is copied with BatchNorm folded into the convolutions, so ``model`` is left as it
    was. ``compile=True`` wraps it in ``torch.compile`` (the first batch pays the compile time);
    ``torchscript=True`` also keeps a traced, frozen copy of the network (:func:`trace_frozen`) for
    calls with metadata: each view of a chunk then takes the GIL once, not once per op.
    Test-time flips (``forward_views``) follow ``card["test_time_flips"]``, so scoring does what
    training calibrated and evaluated (off for cards written before the key existed); ``flips``
    overrides the card (benchmarks compare both on one model).
    """

    def __init__(
        self,
        model: nn.Module,
        card: Mapping,
        *,
        device: str = "auto",
        batch_size: int = 32,
        compile: bool = False,
        torchscript: bool = False,
        flips: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if compile and torchscript:
            raise ValueError("compile and torchscript are alternatives; pick one")
        self.device = resolve_device(device)
        self.card = dict(card)
        self.batch_size = batch_size
        self.flips = bool(card.get("test_time_flips", False)) if flips is None else flips
        self.image_size = int(card.get("image_size", 224))
        self.mean = tuple(card.get("mean", IMAGENET_MEAN))
        self.std = tuple(card.get("std", IMAGENET_STD))
        # Cards written before colour constancy existed carry no key: they were trained without it.
        self.colour_constancy = str(card.get("colour_constancy") or "none")
        self.temperature = float(card.get("temperature") or 1.0)
        if self.temperature <= 0:
            raise ValueError(f"card temperature must be > 0, got {self.temperature}")
        self.logit_bias = float(card.get("logit_bias") or 0.0)  # absent in cards before it existed
        # channels_last lets cuDNN and oneDNN pick their fastest convolution kernels.
        net = fold_batchnorm(copy.deepcopy(model).eval())
        self.model = net.to(self.device, memory_format=torch.channels_last)
        if compile:
            self.model = torch.compile(self.model, dynamic=False)
        # Used whenever metadata is given (scoring always gives it); None runs eager.
        self.traced = (
            trace_frozen(self.model, image_size=self.image_size, device=self.device)
            if torchscript
            else None
        )

    def prepare(self, image: Image.Image) -> np.ndarray:
        """``image`` as this network's input crop (``models.crop_array`` at the card's size and
        colour constancy): the per-image work of ``predict``.

        ``predict`` takes these in place of images, so a caller can prepare images on other
        threads while the network runs; the arithmetic is the same either way.
        """
        return crop_array(
            image, size=self.image_size, colour_constancy_method=self.colour_constancy
        )

    def _crop(self, image: Image.Image | np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            return self.prepare(image)
        dtype = np.uint8 if self.colour_constancy == "none" else np.float32
        if image.shape != (self.image_size, self.image_size, 3) or image.dtype != dtype:
            raise ValueError(
                f"a prepared image must be {self.image_size}x{self.image_size}x3 {dtype.__name__}"
                f" (from this Predictor's prepare), got {image.shape} {image.dtype}"
            )
        return image

    def _logits(
        self,
        images: Sequence[Image.Image | np.ndarray],
        metadata: Sequence[Mapping] | None,
        between: Callable[[], object] | None = None,
    ):
        batch = stack_arrays([self._crop(im) for im in images], mean=self.mean, std=self.std)
        batch = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        if metadata is None:
            return forward_views(self.model, batch, None, flips=self.flips, between=between)
        meta = torch.from_numpy(encode_metadata(metadata)).to(self.device, non_blocking=True)
        model = self.model if self.traced is None else self.traced
        return forward_views(model, batch, meta, flips=self.flips, between=between)

    def _forward(
        self,
        images: Sequence[Image.Image],
        metadata: Sequence[Mapping] | None,
        between: Callable[[], object] | None = None,
    ):
        z = self._logits(images, metadata, between) / self.temperature
        z[:, 1] += self.logit_bias
        return torch.softmax(z, dim=1)[:, 1]

    def _batched(self, step, images, metadata, width: tuple[int, ...]) -> np.ndarray:
        if metadata is not None and len(metadata) != len(images):
            raise ValueError(
                f"metadata has {len(metadata)} rows but there are {len(images)} images"
            )
        out = np.empty((len(images), *width), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                stop = start + self.batch_size
                chunk_meta = None if metadata is None else metadata[start:stop]
                out[start:stop] = step(images[start:stop], chunk_meta).cpu().numpy()
        return out

    def predict(
        self,
        images: Sequence[Image.Image | np.ndarray],
        metadata: Sequence[Mapping] | None = None,
        *,
        between: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Malignant probabilities, float64 ``[N]``; ``metadata`` rows align with ``images``
        (PIL images, or crops from :meth:`prepare`). ``between`` runs on this thread before each
        test-time view after the first (:func:`forward_views`)."""
        step = functools.partial(self._forward, between=between)
        return self._batched(step, images, metadata, ())

    def logits(
        self, images: Sequence[Image.Image], metadata: Sequence[Mapping] | None = None
    ) -> np.ndarray:
        """The uncalibrated logits ``[N, 2]`` behind ``predict`` (flips included, if on).

        For fitting a calibration offline (``models.fit_calibration``) on the scoring path.
        """
        return self._batched(self._logits, images, metadata, (2,))
