"""Training throughput: a manual forward + backward + AdamW step loop on ResNet10.

This is ``models.fit``'s inner loop without data loading and augmentation (about 3.4 ms of one
core per image at 128 px), so it is an upper bound for ``fit``'s img/s.
"""

from __future__ import annotations

import time

import torch

import models

__all__ = ["train_rate"]


def train_rate(*, size: int, batch: int = 32, steps: int = 3, warmup: int = 1) -> float:
    """img/s of forward + backward + AdamW step on ResNet10 (multimodal) at ``size`` px."""
    torch.manual_seed(0)
    net = models.build_model("resnet10_multimodal").train()
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    meta = torch.from_numpy(models.encode_metadata([{}] * batch))
    labels = torch.randint(0, 2, (batch,))
    loss_fn = models.FocalLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(images, meta), labels).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return batch / sorted(seconds)[len(seconds) // 2]
