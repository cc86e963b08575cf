from __future__ import annotations

import json

import pytest
import torch

from models import ChecksumError, build_model, dump_checkpoint, load_checkpoint


@pytest.mark.parametrize("arch", ["resnet10_multimodal", "resnet10_image"])
def test_round_trip_gives_same_outputs(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    weights, card = dump_checkpoint(model, {"arch": arch, "image_size": 64, "temperature": 1.3})
    assert weights[:8] != b"\x80\x02\x8a\n"  # not a pickle
    json.dumps(card)  # JSON-able
    assert card["arch"] == arch and card["num_classes"] == 2 and card["image_size"] == 64
    assert card["classes"] == ["benign", "malignant"] and len(card["sha256"]) == 64
    assert card["temperature"] == 1.3 and card["created_at"] and len(card["mean"]) == 3
    loaded = load_checkpoint(weights, card, device="cpu")
    assert not loaded.training
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


def test_checksum_mismatch_is_refused():
    weights, card = dump_checkpoint(build_model("resnet10_image"), {"arch": "resnet10_image"})
    tampered = weights[:-1] + bytes([weights[-1] ^ 1])
    with pytest.raises(ChecksumError, match="does not match"):
        load_checkpoint(tampered, card)
    with pytest.raises(ValueError):
        load_checkpoint(weights, {**card, "sha256": None})


def test_channels_last_model_can_be_dumped():
    model = build_model("resnet10_image").to(memory_format=torch.channels_last)
    weights, card = dump_checkpoint(model, {})
    assert card["arch"] == "resnet10_image"
    load_checkpoint(weights, card)
