"""The shipped kernel options: applied while a step compiles, never a search, and harmless when they do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer_tinygrad import kernel_opts


@pytest.fixture
def table_at(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def use(path: Path) -> None:
        monkeypatch.setattr(kernel_opts, "TABLE", path)
        kernel_opts.table.cache_clear()

    yield use
    kernel_opts.table.cache_clear()


def capture_mlp_step(dataset: str = "fashion-mnist") -> dict[str, int]:
    """Compile an mlp training step from nothing (tinygrad keeps compiled programs per process) under `applied`."""
    from tinygrad import Device
    from tinygrad.codegen import to_program_cache
    from trainer_tinygrad.config import resolve_config
    from trainer_tinygrad.datasets.manifest import Manifest
    from trainer_tinygrad.steps import TrainStep
    from trainer_tinygrad.train import build_optimizer, initial_model

    entry = Manifest.load().dataset(dataset)
    config = resolve_config({"model": "mlp", "batch_size": 128}, dataset)
    model = initial_model(config, entry.image_shape, entry.num_classes)
    step = TrainStep(model, build_optimizer(config, model), 128, entry.image_shape)
    to_program_cache.clear()
    with kernel_opts.applied(Device.DEFAULT) as counts:
        step.capture()
    return counts


def test_options_round_trip_through_json() -> None:
    from tinygrad.codegen.opt import Opt, OptOps

    opts = [Opt(OptOps.UPCAST, 0, 4), Opt(OptOps.UNROLL, 1, 0), Opt(OptOps.THREAD, 0, 2)]
    assert kernel_opts.decode(json.loads(json.dumps(kernel_opts.encode(opts)))) == opts


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])  # 784 and 3,072 inputs: each shape tuned
def test_the_shipped_table_reaches_the_mlp_step_through_tinygrads_hook(dataset: str) -> None:
    if not kernel_opts.table()["kernels"].get("CPU"):
        pytest.skip("no options shipped for the CPU")
    counts = capture_mlp_step(dataset)
    # The mlp's two big matmuls are in the table; the other kernels take tinygrad's heuristics, none is searched.
    assert counts["tuned"] >= 2, counts
    assert counts["heuristic"] > 10, counts


@pytest.mark.slow
def test_options_that_do_not_apply_fall_back_to_the_heuristics(tmp_path: Path, table_at) -> None:  # type: ignore[no-untyped-def]
    shipped = kernel_opts.table()["kernels"].get("CPU", {})
    if not shipped:
        pytest.skip("no options shipped for the CPU")
    bogus = {key: {**entry, "opts": [["UPCAST", 40, 4]]} for key, entry in shipped.items()}
    (tmp_path / "opts.json").write_text(json.dumps({"kernels": {"CPU": bogus}}))
    table_at(tmp_path / "opts.json")
    counts = capture_mlp_step()
    assert counts["tuned"] == 0 and counts["heuristic"] > 10, counts


def test_turning_the_options_off_changes_what_steps_depend_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernel_opts.ENV, "0")
    assert kernel_opts.digest() == "off"
    monkeypatch.setenv(kernel_opts.ENV, "1")
    assert kernel_opts.digest() != "off" or not kernel_opts.TABLE.is_file()
