"""The suite's numpy forward pass equals tinygrad's evaluation for every reference model, from a checkpoint's
tensors and `architecture` alone (what a verifier on another machine has)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tinygrad import Tensor
from trainer_conformance.inference import Checkpoint, logits_for
from trainer_tinygrad.models import architecture, build_model, state_tensors

pytestmark = pytest.mark.xdist_group("conformance-forward")


@pytest.mark.parametrize(("model", "shape"), [("mlp", (1, 28, 28)), ("convnet", (1, 28, 28)), ("convnet", (3, 32, 32))])
def test_numpy_logits_equal_tinygrad_logits(model: str, shape: tuple[int, int, int]) -> None:
    Tensor.manual_seed(3)
    net = build_model(model, shape, 10)
    state = state_tensors(net)
    rng = np.random.default_rng(0)
    for name, tensor in state.items():
        # Non-trivial BatchNorm statistics, so eval mode (running mean/var, eps) is really exercised.
        if name.endswith("running_mean"):
            tensor.assign(Tensor(rng.normal(0, 0.1, tensor.shape).astype(np.float32))).realize()
        elif name.endswith("running_var"):
            tensor.assign(Tensor(rng.uniform(0.5, 2.0, tensor.shape).astype(np.float32))).realize()
    images = rng.integers(0, 256, size=(8, *shape), dtype=np.uint8)
    expected = net(Tensor(images.astype(np.float32) / 255.0)).numpy()
    tensors = {f"model.{k}": v.numpy() for k, v in state.items()}
    meta = {"architecture": json.dumps(architecture(net, model, shape, 10))}
    got = logits_for(Checkpoint(tensors, meta), model, images)
    assert got.shape == expected.shape == (8, 10)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4), np.abs(got - expected).max()
