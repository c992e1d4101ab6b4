"""An independent numpy forward pass over a checkpoint, to redo the target's reported evaluation.

The input preprocessing and the MLP are fixed by the checkpoint format (`x = uint8 / 255`, NCHW;
`relu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias`). The convnet is read from the checkpoint's
`architecture` layer list, but only when that list is exactly one of the documented reference layouts: a checkpoint
cannot talk the verifier into evaluating some other network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

#: Op sequences of the documented convnets (functions/trainer-tinygrad/README.md), by input shape (C, H, W).
CONVNET_LAYOUTS: dict[tuple[int, int, int], list[str]] = {
    (1, 28, 28): [
        "conv2d", "relu", "conv2d", "relu", "batchnorm", "max_pool2d",
        "conv2d", "relu", "conv2d", "relu", "batchnorm", "max_pool2d",
        "flatten", "linear",
    ],
    (3, 32, 32): [
        "conv2d", "relu", "batchnorm", "conv2d", "relu", "batchnorm", "max_pool2d",
        "conv2d", "relu", "batchnorm", "conv2d", "relu", "batchnorm", "max_pool2d",
        "conv2d", "relu", "batchnorm", "max_pool2d",
        "flatten", "linear",
    ],
}  # fmt: skip

REFERENCE_MODELS = ("mlp", "convnet")


class CheckpointError(ValueError):
    """A checkpoint that the safetensors library refuses, or that lacks what the forward pass needs."""


@dataclass
class Checkpoint:
    """Tensors (numpy, by name) and the header metadata of one safetensors file."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]

    def model_tensors(self) -> dict[str, np.ndarray]:
        """The model's weights (names under `model.`), without optimizer state."""
        return {k: v for k, v in self.tensors.items() if k.startswith("model.")}

    def architecture(self) -> dict[str, Any]:
        """The `architecture` metadata, parsed (empty when absent or not JSON)."""
        try:
            value = json.loads(self.metadata.get("architecture", "{}"))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def open_checkpoint(path: Path) -> Checkpoint:
    """Open a safetensors file with the safetensors library (numpy); any refusal becomes CheckpointError."""
    try:
        tensors = safetensors.numpy.load_file(str(path))
        with safetensors.safe_open(str(path), framework="np") as handle:
            metadata = dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises several unrelated types (SafetensorError, OSError, ValueError)
        raise CheckpointError(f"safetensors cannot open {path.name}: {exc}") from exc
    return Checkpoint(tensors, metadata)


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 NCHW -> float32 in [0, 1], no mean/std (fixed by the checkpoint format)."""
    return images.astype(np.float32) / np.float32(255.0)


def _need(tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in tensors:
        raise CheckpointError(f"checkpoint lacks tensor {name}")
    return tensors[name].astype(np.float32, copy=False)


def mlp_logits(tensors: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The fixed MLP: flatten, l1, relu, l2."""
    flat = x.reshape(x.shape[0], -1)
    hidden = np.maximum(flat @ _need(tensors, "model.l1.weight").T + _need(tensors, "model.l1.bias"), 0)
    return hidden @ _need(tensors, "model.l2.weight").T + _need(tensors, "model.l2.bias")


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: Any, padding: Any) -> np.ndarray:
    sh, sw = _pair(stride)
    if isinstance(padding, int):
        pads = ((padding, padding), (padding, padding))
    elif len(padding) == 2:
        pads = ((padding[0], padding[0]), (padding[1], padding[1]))
    else:  # tinygrad's 4-tuple order: (left, right, top, bottom)
        pads = ((padding[2], padding[3]), (padding[0], padding[1]))
    x = np.pad(x, ((0, 0), (0, 0), *pads))
    kh, kw = weight.shape[2:]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    out = np.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3]))  # (N, Ho, Wo, O)
    return np.ascontiguousarray((out + bias).transpose(0, 3, 1, 2))


def _max_pool(x: np.ndarray, kernel: Any, stride: Any) -> np.ndarray:
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else kernel)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return windows.max(axis=(4, 5))


def layered_logits(tensors: Mapping[str, np.ndarray], layers: list[dict[str, Any]], x: np.ndarray) -> np.ndarray:
    """Apply a checkpoint's layer list (ops: conv2d, relu, batchnorm in eval mode, max_pool2d, flatten, linear)."""
    for layer in layers:
        op = layer.get("op")
        if op == "conv2d":
            w, b = _need(tensors, layer["weight"]), _need(tensors, layer["bias"])
            x = _conv2d(x, w, b, layer.get("stride", 1), layer.get("padding", 0))
        elif op == "relu":
            x = np.maximum(x, 0)
        elif op == "batchnorm":
            mean, var = _need(tensors, layer["running_mean"]), _need(tensors, layer["running_var"])
            scale = _need(tensors, layer["weight"]) / np.sqrt(var + np.float32(layer["eps"]))
            x = (x - mean[:, None, None]) * scale[:, None, None] + _need(tensors, layer["bias"])[:, None, None]
        elif op == "max_pool2d":
            x = _max_pool(x, layer.get("kernel", 2), layer.get("stride"))
        elif op == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif op == "linear":
            x = x @ _need(tensors, layer["weight"]).T + _need(tensors, layer["bias"])
        else:
            raise CheckpointError(f"unknown layer op {op!r}")
    return x


def logits_for(checkpoint: Checkpoint, model: str, images: np.ndarray, batch: int = 250) -> np.ndarray:
    """Logits for uint8 NCHW `images` under the reference model `model`, computed in batches."""
    tensors = checkpoint.model_tensors()
    layers: list[dict[str, Any]] = []
    if model == "convnet":
        layers = list(checkpoint.architecture().get("layers", []))
        ops = [layer.get("op") for layer in layers]
        expected = CONVNET_LAYOUTS.get((int(images.shape[1]), int(images.shape[2]), int(images.shape[3])))
        if ops != expected:
            raise CheckpointError(f"architecture layers {ops} are not the documented convnet {expected}")
    elif model != "mlp":
        raise CheckpointError(f"{model!r} is not a reference model family ({', '.join(REFERENCE_MODELS)})")
    parts = []
    for start in range(0, len(images), batch):
        x = preprocess(images[start : start + batch])
        parts.append(mlp_logits(tensors, x) if model == "mlp" else layered_logits(tensors, layers, x))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def evaluate(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean softmax cross-entropy and accuracy (0..1) of `logits` against integer `labels`."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = float(-log_probs[rows, labels.astype(np.int64)].mean())
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    return loss, accuracy
