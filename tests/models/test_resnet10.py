from __future__ import annotations

import pytest
import torch

from models import ARCHS, METADATA_DIM, build_model, encode_metadata


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_shape_with_and_without_metadata(arch):
    model = build_model(arch, num_classes=2).eval()
    images = torch.randn(3, 3, 64, 64)
    meta = torch.from_numpy(encode_metadata([{"age": 40, "sex": "male", "site": "back"}] * 3))
    with torch.no_grad():
        assert model(images, meta).shape == (3, 2)
        assert model(images).shape == (3, 2)
        assert model(images, None).shape == (3, 2)


def test_image_only_ignores_metadata():
    model = build_model("resnet10_image").eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model(images, torch.zeros(2, METADATA_DIM))
        b = model(images, torch.ones(2, METADATA_DIM))
    torch.testing.assert_close(a, b)
    assert model.metadata_branch is None


def test_multimodal_uses_metadata_and_none_means_all_missing():
    model = build_model("resnet10_multimodal").eval()
    images = torch.randn(2, 3, 64, 64)
    missing = torch.from_numpy(encode_metadata([{}, {}]))
    known = torch.from_numpy(encode_metadata([{"age": 80, "sex": "female", "site": "face"}] * 2))
    with torch.no_grad():
        torch.testing.assert_close(model(images), model(images, missing))
        assert not torch.allclose(model(images, known), model(images, missing))


def test_layer_shapes_match_seed_000():
    model = build_model("resnet10_multimodal", num_classes=3)
    assert [len(getattr(model.trunk, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert isinstance(model.trunk.fc, torch.nn.Identity)
    assert model.metadata_branch[0].in_features == METADATA_DIM
    assert model.metadata_branch[3].out_features == 64
    assert model.head[0].in_features == 512 + 64
    assert model.head[3].out_features == 3
    assert build_model("resnet10_image").head[0].in_features == 512


def test_bad_metadata_shape_and_unknown_arch():
    model = build_model("resnet10_multimodal").eval()
    with pytest.raises(ValueError, match="metadata must have shape"):
        model(torch.randn(2, 3, 32, 32), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unknown arch 'resnet50'"):
        build_model("resnet50")
