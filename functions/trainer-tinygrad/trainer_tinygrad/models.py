"""The models, one short class each, and the layer list written into every checkpoint.

Shaped like tinygrad's `examples/beautiful_mnist.py`: a model is a list of layers applied in order, so the
description a verifier reads (`describe`) is generated from the very objects that compute, not written by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from tinygrad import Tensor, nn
from tinygrad.nn.state import get_state_dict

from trainer_tinygrad.convolution import Conv2d

Layer = Callable[[Tensor], Tensor]

#: BatchNorm epsilon, written into the architecture so a verifier uses the same one.
BN_EPS = 1e-5


def preprocess(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 NCHW images -> float32 model input in [0, 1]; fixed by the checkpoint format (no mean/std).

    `out`: a float32 array to write into (an input buffer's memory) instead of a new one; the same values.
    """
    return np.divide(images, np.float32(255.0), out=out, dtype=np.float32)


def flatten(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C*H*W), row-major, as numpy's reshape."""
    return x.flatten(1)


def max_pool(x: Tensor) -> Tensor:
    """2x2 max pooling with stride 2; an odd edge row or column is dropped."""
    return cast(Tensor, x.max_pool2d((2, 2)))


class MLP:
    """784-128-10 (or C*H*W-128-10): the attribute names l1, l2 are part of the checkpoint format."""

    def __init__(self, in_features: int, classes: int) -> None:
        self.l1 = nn.Linear(in_features, 128)
        self.l2 = nn.Linear(128, classes)

    def __call__(self, x: Tensor) -> Tensor:
        return self.l2(self.l1(flatten(x)).relu())

    def describe(self) -> list[dict[str, Any]]:
        """The layer list of the checkpoint's `architecture`."""
        return [{"op": "flatten"}, _describe(self.l1, "l1"), {"op": "relu"}, _describe(self.l2, "l2")]


class Sequential:
    """Layers applied in order; the state-dict names are `layers.<index>.<tensor>`."""

    layers: list[Layer]

    def __call__(self, x: Tensor) -> Tensor:
        return x.sequential(self.layers)

    def describe(self) -> list[dict[str, Any]]:
        """The layer list of the checkpoint's `architecture`."""
        return [_describe(layer, f"layers.{i}") for i, layer in enumerate(self.layers)]


class ConvNet(Sequential):
    """tinygrad's beautiful_mnist model, for 1x28x28 images."""

    def __init__(self, classes: int) -> None:
        self.layers = [
            Conv2d(1, 32, 5), Tensor.relu,
            Conv2d(32, 32, 5), Tensor.relu,
            nn.BatchNorm(32, eps=BN_EPS), max_pool,
            Conv2d(32, 64, 3), Tensor.relu,
            Conv2d(64, 64, 3), Tensor.relu,
            nn.BatchNorm(64, eps=BN_EPS), max_pool,
            flatten, nn.Linear(576, classes),
        ]  # fmt: skip


class CifarConvNet(Sequential):
    """A small VGG-style net for 3x32x32 images: three conv blocks (32, 64, 128 channels), padding keeps the size."""

    def __init__(self, classes: int) -> None:
        self.layers = [
            Conv2d(3, 32, 3, padding=1), Tensor.relu, nn.BatchNorm(32, eps=BN_EPS),
            Conv2d(32, 32, 3, padding=1), Tensor.relu, nn.BatchNorm(32, eps=BN_EPS), max_pool,
            Conv2d(32, 64, 3, padding=1), Tensor.relu, nn.BatchNorm(64, eps=BN_EPS),
            Conv2d(64, 64, 3, padding=1), Tensor.relu, nn.BatchNorm(64, eps=BN_EPS), max_pool,
            Conv2d(64, 128, 3, padding=1), Tensor.relu, nn.BatchNorm(128, eps=BN_EPS), max_pool,
            flatten, nn.Linear(128 * 4 * 4, classes),
        ]  # fmt: skip


Model = MLP | Sequential


def build_model(name: str, input_shape: tuple[int, ...], classes: int) -> Model:
    """The model `name` for images of `input_shape` (C, H, W), its tensors lazy (see `initial_state`)."""
    if name == "mlp":
        return MLP(int(np.prod(input_shape)), classes)
    if name == "convnet" and tuple(input_shape) == (1, 28, 28):
        return ConvNet(classes)
    if name == "convnet" and tuple(input_shape) == (3, 32, 32):
        return CifarConvNet(classes)
    raise ValueError(f"no model {name!r} for input shape {tuple(input_shape)}")


def architecture(model: Model, name: str, input_shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    """What a verifier needs to redo the forward pass in numpy (see the README's Models section)."""
    return {
        "model": name,
        "class": type(model).__name__,
        "input_shape": list(input_shape),
        "classes": classes,
        "preprocessing": "x = image_uint8.astype(float32) / 255.0, NCHW",
        "layers": model.describe(),
    }


def initial_state(model: Model, seed: int) -> dict[str, np.ndarray]:
    """The initial values of the linear and conv layers' weights and biases, drawn with numpy seeded by `seed`.

    The distribution is tinygrad's own default: uniform in +-1/sqrt(fan_in), fan_in = inputs x kernel area; drawn
    in state-dict order, weight before bias. Drawn with numpy, not tinygrad's generator, because realizing
    tinygrad's random kernels costs 1.3 s (mlp) to 2.3 s (convnet) of scheduling at the start of every run; numpy
    takes milliseconds, and gives every device the same initial weights. BatchNorm keeps tinygrad's constants
    (weight 1, bias 0, running mean 0, running variance 1).
    """
    rng = np.random.default_rng(seed)
    layers = [("l1", model.l1), ("l2", model.l2)] if isinstance(model, MLP) else _prefixed(model)
    values: dict[str, np.ndarray] = {}
    for prefix, layer in layers:
        if isinstance(layer, nn.Linear | nn.Conv2d):
            bound = 1.0 / math.sqrt(math.prod(int(d) for d in layer.weight.shape[1:]))
            for name in ("weight", "bias"):
                shape = tuple(int(d) for d in getattr(layer, name).shape)
                values[f"{prefix}.{name}"] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return values


def convolution_kernels_of(model: Model, device: str) -> str | None:
    """What computes the model's convolutions on `device`: "c" (the hand-written kernels of
    `convolution_kernels.py`) or "tinygrad" for all of them, "mixed" otherwise; None for a model without any."""
    found = {layer.kernels(device) for layer in getattr(model, "layers", []) if isinstance(layer, Conv2d)}
    return None if not found else found.pop() if len(found) == 1 else "mixed"


def _prefixed(model: Sequential) -> list[tuple[str, Layer]]:
    return [(f"layers.{i}", layer) for i, layer in enumerate(model.layers)]


def state_tensors(model: Model) -> dict[str, Tensor]:
    """The model's weights and BatchNorm statistics by tinygrad state-dict name.

    `num_batches_tracked` is left out: an int64 counter that no computation reads, and checkpoints are float32.
    """
    return {k: v for k, v in get_state_dict(model).items() if not k.endswith("num_batches_tracked")}


def _describe(layer: Layer, prefix: str) -> dict[str, Any]:
    if isinstance(layer, nn.Linear):
        return {"op": "linear", "weight": f"model.{prefix}.weight", "bias": f"model.{prefix}.bias"}
    if isinstance(layer, nn.Conv2d):
        return {
            "op": "conv2d",
            "weight": f"model.{prefix}.weight",
            "bias": f"model.{prefix}.bias",
            "kernel": list(layer.kernel_size),
            "stride": layer.stride,
            "padding": layer.padding,
        }
    if isinstance(layer, nn.BatchNorm):
        return {
            "op": "batchnorm",
            "weight": f"model.{prefix}.weight",
            "bias": f"model.{prefix}.bias",
            "running_mean": f"model.{prefix}.running_mean",
            "running_var": f"model.{prefix}.running_var",
            "eps": layer.eps,
        }
    if layer is Tensor.relu:
        return {"op": "relu"}
    if layer is max_pool:
        return {"op": "max_pool2d", "kernel": [2, 2], "stride": [2, 2]}
    if layer is flatten:
        return {"op": "flatten"}
    raise TypeError(f"no description for layer {layer!r}")
