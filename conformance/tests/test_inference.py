"""The numpy forward pass: each op against a direct definition, and refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from trainer_conformance.inference import (
    CONVNET_LAYOUTS,
    Checkpoint,
    CheckpointError,
    evaluate,
    layered_logits,
    logits_for,
    mlp_logits,
    open_checkpoint,
)

RNG = np.random.default_rng(0)


def naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, width = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (width - kw) // stride + 1
    out = np.zeros((n, o, ho, wo), np.float64)
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    return out


@pytest.mark.parametrize(("stride", "pad"), [(1, 0), (1, 1), (2, 1)])
def test_conv2d_layer_equals_the_definition(stride: int, pad: int) -> None:
    x = RNG.normal(size=(2, 3, 7, 7)).astype(np.float32)
    tensors = {"w": RNG.normal(size=(4, 3, 3, 3)).astype(np.float32), "b": RNG.normal(size=4).astype(np.float32)}
    layer = {"op": "conv2d", "weight": "w", "bias": "b", "stride": stride, "padding": pad}
    got = layered_logits(tensors, [layer], x)
    assert np.allclose(got, naive_conv(x, tensors["w"], tensors["b"], stride, pad), atol=1e-4)


def test_batchnorm_pool_flatten_linear() -> None:
    x = RNG.normal(size=(2, 2, 4, 4)).astype(np.float32)
    t = {
        "g": np.array([2.0, 0.5], np.float32),
        "beta": np.array([0.1, -0.1], np.float32),
        "mean": np.array([0.3, -0.2], np.float32),
        "var": np.array([4.0, 0.25], np.float32),
        "lw": RNG.normal(size=(3, 8)).astype(np.float32),
        "lb": np.zeros(3, np.float32),
    }
    layers = [
        {"op": "batchnorm", "weight": "g", "bias": "beta", "running_mean": "mean", "running_var": "var", "eps": 1e-5},
        {"op": "max_pool2d", "kernel": [2, 2], "stride": [2, 2]},
        {"op": "flatten"},
        {"op": "linear", "weight": "lw", "bias": "lb"},
    ]
    normed = (x - t["mean"][:, None, None]) / np.sqrt(t["var"][:, None, None] + 1e-5) * t["g"][:, None, None]
    normed += t["beta"][:, None, None]
    pooled = normed.reshape(2, 2, 2, 2, 2, 2).max(axis=(3, 5))
    expected = pooled.reshape(2, -1) @ t["lw"].T
    assert np.allclose(layered_logits(t, layers, x), expected, atol=1e-5)


def test_mlp_is_the_fixed_formula_on_scaled_pixels() -> None:
    tensors = {
        "model.l1.weight": RNG.normal(size=(5, 4)).astype(np.float32),
        "model.l1.bias": RNG.normal(size=5).astype(np.float32),
        "model.l2.weight": RNG.normal(size=(3, 5)).astype(np.float32),
        "model.l2.bias": RNG.normal(size=3).astype(np.float32),
    }
    images = RNG.integers(0, 256, size=(6, 1, 2, 2), dtype=np.uint8)
    x = images.reshape(6, -1) / 255.0
    hidden = np.maximum(x @ tensors["model.l1.weight"].T + tensors["model.l1.bias"], 0)
    expected = hidden @ tensors["model.l2.weight"].T + tensors["model.l2.bias"]
    got = logits_for(Checkpoint(tensors, {}), "mlp", images, batch=4)
    assert np.allclose(got, expected, atol=1e-5)
    assert np.allclose(mlp_logits(tensors, x.astype(np.float32)), expected, atol=1e-5)


def test_evaluate_loss_and_accuracy() -> None:
    loss, accuracy = evaluate(np.zeros((4, 10), np.float32), np.array([0, 1, 2, 3]))
    assert math.isclose(loss, math.log(10), rel_tol=1e-9)
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]], np.float32)
    loss, accuracy = evaluate(logits, np.array([0, 1, 1]))
    assert accuracy == pytest.approx(2 / 3)
    assert loss == pytest.approx((2 * math.log1p(math.exp(-5)) + (5 + math.log1p(math.exp(-5)))) / 3)


def test_convnet_with_an_undocumented_layout_is_refused() -> None:
    arch = '{"layers": [{"op": "flatten"}, {"op": "linear", "weight": "model.w", "bias": "model.b"}]}'
    checkpoint = Checkpoint({"model.w": np.zeros((10, 784), np.float32), "model.b": np.zeros(10, np.float32)},
                            {"architecture": arch})  # fmt: skip
    with pytest.raises(CheckpointError, match="documented convnet"):
        logits_for(checkpoint, "convnet", np.zeros((1, 1, 28, 28), np.uint8))
    with pytest.raises(CheckpointError, match="not a reference model"):
        logits_for(checkpoint, "resnet", np.zeros((1, 1, 28, 28), np.uint8))
    assert CONVNET_LAYOUTS[(1, 28, 28)][-1] == "linear"


def test_open_checkpoint_reads_tensors_and_metadata_and_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    path.write_bytes(safetensors.numpy.save({"model.a": np.ones(3, np.float32)}, metadata={"step": "5"}))
    checkpoint = open_checkpoint(path)
    assert checkpoint.metadata["step"] == "5"
    assert list(checkpoint.model_tensors()) == ["model.a"]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError):
        open_checkpoint(bad)
