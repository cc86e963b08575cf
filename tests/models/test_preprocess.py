from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import (
    Predictor,
    TrainConfig,
    build_model,
    colour_constancy,
    to_tensor,
)


def _cast(rng, gains) -> np.ndarray:
    """A grey-ish textured scene under a coloured light (per-channel gains)."""
    scene = rng.uniform(0.2, 0.6, (32, 32, 1)) * np.ones((1, 1, 3))
    return np.clip(scene * np.asarray(gains), 0, 1).astype(np.float32)


@pytest.mark.parametrize("method", ["gray_world", "shades_of_gray"])
def test_colour_constancy_removes_a_colour_cast(method):
    rng = np.random.default_rng(0)
    warm, cool = _cast(rng, (1.3, 1.0, 0.7)), _cast(np.random.default_rng(0), (0.8, 1.0, 1.25))
    before = np.abs(warm.mean((0, 1)) - cool.mean((0, 1))).max()
    fixed = [colour_constancy(a, method=method) for a in (warm, cool)]
    after = np.abs(fixed[0].mean((0, 1)) - fixed[1].mean((0, 1))).max()
    assert after < 0.2 * before
    assert fixed[0].shape == warm.shape and 0.0 <= fixed[0].min() and fixed[0].max() <= 1.0


def test_colour_constancy_none_and_bad_method():
    array = np.full((4, 4, 3), 0.5, np.float32)
    assert colour_constancy(array, method="none") is array
    with pytest.raises(ValueError, match="colour constancy must be one of"):
        colour_constancy(array, method="retinex")
    with pytest.raises(ValueError, match="colour_constancy must be one of"):
        TrainConfig(colour_constancy="retinex")


def test_predictor_applies_the_cards_colour_constancy():
    rng = np.random.default_rng(1)
    image = Image.fromarray((_cast(rng, (1.3, 1.0, 0.7)) * 255).astype(np.uint8))
    plain = to_tensor(image, size=16)
    balanced = to_tensor(image, size=16, colour_constancy_method="shades_of_gray")
    assert not torch.allclose(plain, balanced)
    torch.manual_seed(0)
    net = build_model("resnet10_image")
    card = {"image_size": 16}
    old = Predictor(net, card, device="cpu").predict([image])
    new = Predictor(net, {**card, "colour_constancy": "shades_of_gray"}, device="cpu")
    assert new.colour_constancy == "shades_of_gray"
    assert Predictor(net, card, device="cpu").colour_constancy == "none"  # old cards
    assert not np.allclose(old, new.predict([image]))


def test_to_batch_matches_to_tensor_with_colour_constancy():
    import numpy as np
    import torch
    from PIL import Image

    from models.preprocess import to_batch, to_tensor

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)) for _ in range(3)]
    for method in ("none", "gray_world", "shades_of_gray"):
        batch = to_batch(images, size=64, colour_constancy_method=method)
        single = torch.stack(
            [to_tensor(im, size=64, colour_constancy_method=method) for im in images]
        )
        assert torch.allclose(batch, single, atol=1e-4), method
