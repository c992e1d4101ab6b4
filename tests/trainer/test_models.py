"""The architecture written into checkpoints names every tensor and is exact enough to redo the forward in numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from trainer_harness import cross_entropy, numpy_logits
from trainer_tinygrad.datasets import DatasetCache, load_dataset
from trainer_tinygrad.models import architecture, build_model, state_tensors

SHAPES = [("mlp", (1, 28, 28)), ("convnet", (1, 28, 28)), ("mlp", (3, 32, 32)), ("convnet", (3, 32, 32))]


@pytest.mark.parametrize(("name", "shape"), SHAPES)
def test_architecture_names_exactly_the_model_tensors(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10)
    arch = architecture(model, name, shape, 10)
    named = {v for layer in arch["layers"] for k, v in layer.items() if isinstance(v, str) and v.startswith("model.")}
    assert named == {f"model.{k}" for k in state_tensors(model)}
    assert arch["input_shape"] == list(shape) and arch["layers"][-1]["op"] == "linear"


def test_an_unknown_model_or_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="no model"):
        build_model("convnet", (1, 32, 32), 10)


@pytest.mark.slow
def test_convnet_forward_in_numpy_from_the_description_matches_tinygrad(data_dir: Path) -> None:
    from trainer_tinygrad.checkpoints import restore
    from trainer_tinygrad.steps import Evaluator

    model = build_model("convnet", (1, 28, 28), 10)
    rng = np.random.default_rng(0)
    # Random BatchNorm statistics too, so the eval-mode formula is really exercised.
    arrays = {
        f"model.{k}": (rng.uniform(0.5, 2.0, t.shape) if k.endswith("running_var") else rng.normal(0, 0.2, t.shape))
        for k, t in state_tensors(model).items()
    }
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    restore(model, None, arrays)
    data = load_dataset("fashion-mnist", DatasetCache(data_dir))
    images, labels = data.x_test[:32], data.y_test[:32]
    result = Evaluator(model, images, labels)()
    loss, accuracy = cross_entropy(
        numpy_logits(arrays, architecture(model, "convnet", (1, 28, 28), 10), images), labels
    )
    assert loss == pytest.approx(result.loss, rel=1e-5)
    assert accuracy == pytest.approx(result.accuracy, abs=1 / 32 + 1e-9)
