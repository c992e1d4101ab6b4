"""The CIFAR-10 path: a small archive in the real layout, imported into a cache that pins it, trained a few steps."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType

import pytest
import safetensors
import safetensors.numpy
from tinygrad import Device
from trainer_harness import cross_entropy, numpy_logits
from trainer_tinygrad import convolution_kernels
from trainer_tinygrad.config import resolve_config
from trainer_tinygrad.datasets import DatasetCache, Manifest, load_dataset
from trainer_tinygrad.protocol import EventWriter

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("trainer-cifar")]

PER_BATCH, TEST = 16, 24


def dataset_formats() -> ModuleType:
    """The datasets tests' writers of files in the real layouts (CIFAR-10's Python 2 pickles included)."""
    path = Path(__file__).resolve().parents[1] / "datasets" / "dataset_formats.py"
    spec = importlib.util.spec_from_file_location("dataset_formats", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cifar_cache(tmp_path_factory: pytest.TempPathFactory) -> DatasetCache:
    """A cache whose manifest is the real one with the CIFAR-10 entry re-pinned to the small archive."""
    root = tmp_path_factory.mktemp("cifar")
    formats = dataset_formats()
    archive = formats.cifar_archive(formats.cifar_batches(PER_BATCH, TEST))
    (root / "incoming").mkdir()
    (root / "incoming" / "cifar-10-python.tar.gz").write_bytes(archive)
    doc = json.loads(Manifest.load().path.read_bytes())  # type: ignore[union-attr]
    entry = doc["datasets"]["cifar10"]
    entry["files"][0] |= {
        "bytes": len(archive),
        "sha256": hashlib.sha256(archive).hexdigest(),
        "md5": hashlib.md5(archive).hexdigest(),
    }
    entry["splits"]["train"]["count"], entry["splits"]["test"]["count"] = 5 * PER_BATCH, TEST
    (root / "manifest.json").write_text(json.dumps(doc))
    cache = DatasetCache(root / "cache", Manifest.load(root / "manifest.json"))
    assert cache.import_dir("cifar10", root / "incoming").verified
    return cache


@pytest.mark.parametrize("model", ["mlp", "convnet"])
def test_cifar10_trains_and_checkpoints(model: str, cifar_cache: DatasetCache, tmp_path: Path) -> None:
    from trainer_tinygrad.train import train

    data = load_dataset("cifar10", cifar_cache)
    assert data.x_train.shape == (80, 3, 32, 32)
    config = resolve_config(
        {"model": model, "steps": 6, "batch_size": 16, "log_every": 2, "checkpoint_every": 3}, "cifar10"
    )
    stream = io.StringIO()
    assert train(config, data, tmp_path, EventWriter(stream), lambda: False, run_id="cifar-test") == "finished"
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events[0]["event"] == "started" and events[0]["dataset"] == "cifar10"
    on_cpu = "c" if convolution_kernels.supported(Device.DEFAULT) else "tinygrad"
    assert events[0]["convolution_kernels"] == (on_cpu if model == "convnet" else None)
    assert [e["step"] for e in events if e["event"] == "metric"] == [2, 4, 6]
    checkpoints = [e for e in events if e["event"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [3, 6] and all(c["eval_samples"] == TEST for c in checkpoints)
    with safetensors.safe_open(checkpoints[-1]["path"], framework="np") as f:
        meta = f.metadata()
    architecture = json.loads(meta["architecture"])
    assert architecture["input_shape"] == [3, 32, 32] and meta["dataset"] == "cifar10"
    arrays = safetensors.numpy.load_file(checkpoints[-1]["path"])
    loss, accuracy = cross_entropy(numpy_logits(arrays, architecture, data.x_test), data.y_test)
    assert loss == pytest.approx(checkpoints[-1]["eval_loss"], abs=1e-5)
    assert accuracy == pytest.approx(checkpoints[-1]["eval_accuracy"], abs=1 / TEST + 1e-9)
