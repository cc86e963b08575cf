from __future__ import annotations

import numpy as np
import pytest
import torch

from models import Predictor, build_model, resolve_device, set_threads, to_batch, to_tensor

from .conftest import lesion_image


def test_to_tensor_shape_and_normalisation(photo):
    t = to_tensor(photo.resize((90, 60)), size=32)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    white = to_tensor(photo.point(lambda _: 255), size=8)
    torch.testing.assert_close(white[0], torch.full((8, 8), (1 - 0.485) / 0.229))
    assert to_batch([photo, photo], size=16).shape == (2, 3, 16, 16)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_set_threads_is_idempotent():
    n = torch.get_num_threads()
    assert set_threads(n) == n and set_threads(n) == n
    assert torch.get_num_threads() == n


def test_predict_probabilities_batches_and_temperature(rng):
    torch.manual_seed(0)
    model = build_model("resnet10_multimodal")
    images = [lesion_image(rng, size=70) for _ in range(5)]
    meta = [{"age": 50, "sex": "male", "site": "back"}] * 5
    card = {"image_size": 64}
    probs = Predictor(model, card, device="cpu", batch_size=2).predict(images, meta)
    assert probs.shape == (5,) and np.all((probs > 0) & (probs < 1))
    whole = Predictor(model, card, device="cpu", batch_size=8).predict(images, meta)
    np.testing.assert_allclose(probs, whole, rtol=1e-4, atol=1e-5)
    hot = Predictor(model, {**card, "temperature": 100.0}, device="cpu").predict(images, meta)
    assert np.all(np.abs(hot - 0.5) <= np.abs(probs - 0.5) + 1e-6)
    # logit_bias shifts every logit margin by the same amount: odds times e^bias.
    shifted = Predictor(model, {**card, "logit_bias": 0.7}, device="cpu").predict(images, meta)
    odds = lambda p: p / (1 - p)  # noqa: E731
    np.testing.assert_allclose(odds(shifted), odds(probs) * np.exp(0.7), rtol=1e-3)
    assert Predictor(model, card, device="cpu").predict(images).shape == (5,)
    assert Predictor(model, card, device="cpu").predict([]).shape == (0,)
    with pytest.raises(ValueError, match="metadata has 2 rows"):
        Predictor(model, card, device="cpu").predict(images, meta[:2])


@pytest.mark.parametrize("method", ["none", "shades_of_gray"])
def test_prepared_crops_score_exactly_as_the_images(rng, method):
    torch.manual_seed(3)
    model = build_model("resnet10_multimodal")
    images = [lesion_image(rng, size=70), lesion_image(rng, size=90).convert("L")]
    meta = [{"age": 40}, {}]
    card = {"image_size": 48, "colour_constancy": method}
    predictor = Predictor(model, card, device="cpu")
    crops = [predictor.prepare(im) for im in images]
    assert crops[0].shape == (48, 48, 3)
    assert crops[0].dtype == (np.uint8 if method == "none" else np.float32)
    np.testing.assert_array_equal(predictor.predict(crops, meta), predictor.predict(images, meta))
    # A mix is fine; a crop made for another size or colour constancy is refused, not rescaled.
    np.testing.assert_array_equal(
        predictor.predict([crops[0], images[1]], meta), predictor.predict(images, meta)
    )
    other = Predictor(model, {**card, "image_size": 32}, device="cpu").prepare(images[0])
    with pytest.raises(ValueError, match="a prepared image must be 48x48x3"):
        predictor.predict([other])
    with pytest.raises(ValueError, match="from this Predictor's prepare"):
        predictor.predict([crops[0].astype(np.float64)])


def test_predictor_folds_batchnorm_without_touching_the_model(rng):
    torch.manual_seed(1)
    model = build_model("resnet10_image").eval()
    for m in model.modules():  # non-trivial running stats, so a wrong fold would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    images = [lesion_image(rng, size=70) for _ in range(3)]
    predictor = Predictor(model, {"image_size": 64}, device="cpu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.inference_mode():
        expected = torch.softmax(model(to_batch(images, size=64)), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(predictor.predict(images), expected, rtol=1e-4, atol=1e-6)


def test_flips_average_the_logits_of_four_views(rng):
    torch.manual_seed(2)
    model = build_model("resnet10_image").eval()
    images = [lesion_image(rng, size=70) for _ in range(3)]
    card = {"image_size": 64, "temperature": 2.0, "logit_bias": 0.3}
    flipped = Predictor(model, card, device="cpu", flips=True).predict(images)
    batch = to_batch(images, size=64)
    with torch.inference_mode():
        views = [batch, batch.flip(3), batch.flip(2), batch.flip(2, 3)]
        logits = torch.stack([model(v) for v in views]).mean(0) / 2.0
        expected = torch.softmax(logits + torch.tensor([0.0, 0.3]), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(flipped, expected, rtol=1e-4, atol=1e-6)
    plain = Predictor(model, card, device="cpu").predict(images)
    assert not np.allclose(flipped, plain, atol=1e-4)  # the views do change the answer
    # A mirror image gets the same four views, so the same probability.
    mirrored = [image.transpose(0) for image in images]  # Image.FLIP_LEFT_RIGHT
    np.testing.assert_allclose(
        Predictor(model, card, device="cpu", flips=True).predict(mirrored), flipped, atol=1e-5
    )
    # The card decides by default (what training calibrated); cards without the key score plainly.
    from_card = Predictor(model, {**card, "test_time_flips": True}, device="cpu")
    assert from_card.flips and not Predictor(model, card, device="cpu").flips
    np.testing.assert_allclose(from_card.predict(images), flipped, atol=1e-6)
    overridden = Predictor(model, {**card, "test_time_flips": True}, device="cpu", flips=False)
    np.testing.assert_allclose(overridden.predict(images), plain, atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet10_multimodal", "resnet10_image"])
def test_torchscript_scores_as_the_eager_model(rng, arch):
    torch.manual_seed(0)
    model = build_model(arch)
    card = {"arch": arch, "image_size": 48, "test_time_flips": True}
    images = [lesion_image(rng, size=60) for _ in range(7)]
    meta = [{"age": 30 + 5 * i, "sex": "female"} for i in range(7)]
    eager = Predictor(model, card, device="cpu", batch_size=4)
    traced = Predictor(model, card, device="cpu", batch_size=4, torchscript=True)
    assert eager.traced is None and isinstance(traced.traced, torch.jit.ScriptModule)
    # Batches of 4 and 3, neither the size it was traced at; with and without metadata.
    np.testing.assert_allclose(traced.predict(images, meta), eager.predict(images, meta), atol=1e-6)
    np.testing.assert_allclose(traced.predict(images), eager.predict(images), atol=1e-6)
    np.testing.assert_allclose(traced.logits(images, meta), eager.logits(images, meta), atol=1e-5)


@pytest.mark.parametrize("torchscript", [False, True])
def test_between_runs_before_each_later_view_and_leaves_the_scores(rng, torchscript):
    torch.manual_seed(0)
    model = build_model("resnet10_multimodal")
    card = {"image_size": 48, "test_time_flips": True}
    images = [lesion_image(rng, size=60) for _ in range(7)]
    meta = [{"age": 30 + 5 * i} for i in range(7)]
    predictor = Predictor(model, card, device="cpu", batch_size=4, torchscript=torchscript)
    calls: list[str] = []
    scored = predictor.predict(images, meta, between=lambda: calls.append("view"))
    assert len(calls) == 6  # three later views in each of the two batches (4 + 3)
    np.testing.assert_allclose(scored, predictor.predict(images, meta), atol=1e-6)
    # What between does takes effect for the views after it: here, one torch thread.
    before = torch.get_num_threads()
    try:
        one = predictor.predict(images, meta, between=lambda: torch.set_num_threads(1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(one, scored, atol=1e-5)
    plain = Predictor(model, card, device="cpu", flips=False, torchscript=torchscript)
    plain.predict(images, meta, between=lambda: calls.append("view"))
    assert len(calls) == 6  # one view: nothing between


class _BatchSizeDependent(torch.nn.Module):
    """Control flow on a value the trace freezes: the trace keeps the branch it saw."""

    def forward(self, images, metadata=None):
        logits = images.mean(dim=(2, 3))[:, :2]
        return logits if images.shape[0] % 2 == 0 else logits + 1.0


class _Untraceable(torch.nn.Module):
    def forward(self, images, metadata=None):
        return {"logits": images.mean().item()}  # a Python float: not traceable


def test_a_trace_that_fails_or_differs_is_dropped(caplog):
    from models.predictor import trace_frozen

    with caplog.at_level("WARNING", logger="models.predictor"):
        assert trace_frozen(_BatchSizeDependent(), image_size=4) is None
        assert trace_frozen(_Untraceable(), image_size=4) is None
    assert "differs from the model" in caplog.text and "trace failed" in caplog.text
    # The same module without the branch traces fine: the refusal above is the check's doing.
    assert trace_frozen(build_model("resnet10_image"), image_size=16) is not None


def test_torchscript_and_compile_are_exclusive():
    with pytest.raises(ValueError, match="alternatives"):
        Predictor(build_model("resnet10_image"), {"image_size": 32}, compile=True, torchscript=True)
