"""The process edges: a bad config is refused before any work, a missing dataset fails cleanly, `device` answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trainer_harness import run_trainer, spec
from trainer_tinygrad.config import ConfigError, check_config


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({k: v for k, v in spec().items() if k != "steps"}), "steps"),
        (json.dumps(spec() | {"model": "resnet"}), "model"),
        (json.dumps(spec() | {"batch_size": 0}), "batch_size"),
        (json.dumps(spec() | {"steps": True}), "steps"),
        (json.dumps(spec() | {"learning_rate": -0.1}), "learning_rate"),
        (json.dumps(spec() | {"dataset": "imagenet"}), "dataset"),
        (json.dumps(spec()).replace('"learning_rate": 0.001', '"learning_rate": NaN'), "NaN"),
    ],
)
def test_a_bad_config_fails_with_invalid_config_and_exit_2(text: str, names: str, tmp_path: Path) -> None:
    run = run_trainer(text, tmp_path / "out", tmp_path / "no-data")
    assert [e["event"] for e in run.events] == ["failed"]
    assert run.returncode == 2 and run.terminal["code"] == "invalid_config"
    assert names in run.terminal["reason"]
    assert not (tmp_path / "out").exists(), "nothing is created for a refused config"


def test_a_dataset_missing_from_the_cache_fails_with_its_code(tmp_path: Path) -> None:
    run = run_trainer(spec(steps=5), tmp_path / "out", tmp_path / "empty-cache")
    assert [e["event"] for e in run.events] == ["failed"]
    assert run.returncode == 1 and run.terminal["code"] == "dataset_not_available"
    assert "fashion-mnist" in run.terminal["reason"]


def test_a_resume_checkpoint_that_is_not_one_fails_cleanly(tmp_path: Path, data_dir: Path) -> None:
    bogus = tmp_path / "step-000010.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    run = run_trainer(spec(steps=5), tmp_path / "out", data_dir, resume=bogus)
    assert run.returncode == 1 and run.terminal["code"] == "invalid_checkpoint"


def test_device_reports_the_device_tinygrad_opens() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_tinygrad", "device"], capture_output=True, text=True, timeout=120, check=False
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"] is True, proc.stderr
    assert report["device"] and report["tinygrad_version"] == "0.14.0"


def test_the_cpu_devices_own_programs_are_compiled_once_then_read_from_the_step_cache(tmp_path: Path) -> None:
    def probe() -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DEV": "CPU", "TRAINER_STEP_CACHE": str(tmp_path)}
        argv = [sys.executable, "-m", "trainer_tinygrad", "device"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)
        assert done.returncode == 0 and json.loads(done.stdout)["ok"] is True, done.stderr
        return done

    probe()
    saved = sorted(tmp_path.glob("cpu-device-*.pkl"))
    assert len(saved) == 4  # signal, wait, timestamp and the worker's loop (tinygrad 0.14)
    before = {p: p.read_bytes() for p in saved}
    saved[0].write_bytes(b"not a pickle")  # as a full disk could leave it: compiled again, then saved whole
    done = probe()  # the sum it checks ran on a device built from the cached programs
    assert f"step cache: ignoring {saved[0]}" in done.stderr
    assert {p: p.read_bytes() for p in sorted(tmp_path.glob("cpu-device-*.pkl"))} == before


@pytest.mark.parametrize(
    "request_",
    [{}, {"model": "convnet", "epochs": 1.5}, {"optimizer": "sgd", "eval_samples": 500}, {"steps": 7, "seed": 9}],
)
def test_every_resolved_config_passes_the_config_check(request_: dict[str, Any]) -> None:
    config = spec(**request_)
    assert check_config(config) == config


@pytest.mark.parametrize(
    ("change", "field"),
    [({"steps": 50.0}, "steps"), ({"seed": -1}, "seed"), ({"eval_samples": 0}, "eval_samples"),
     ({"optimizer": "rmsprop"}, "optimizer"), ({"steps": 1_000_001}, "steps"), ({"batch_size": True}, "batch_size")],
)  # fmt: skip
def test_the_config_check_is_the_schema_with_integers_that_are_integers(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        check_config(spec() | change)


@pytest.mark.parametrize("script", ["trainer-train", "trainer-datasets"])
def test_the_console_scripts_answer_version(script: str) -> None:
    command = [str(Path(sys.executable).with_name(script)), "--version"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith("trainer-tinygrad ") and "(tinygrad 0.14.0)" in done.stdout


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--help"], ["train", "device", "DEV", "CACHEDB", "TRAINER_DATA_DIR"]),
        (["train", "--help"], ["--config", "--data-dir", "DEV", "CACHEDB", "TRAINER_DATA_DIR"]),
        (["device", "--help"], ["DEV", "CACHEDB"]),
    ],
)
def test_the_help_names_every_command_and_environment_variable(argv: list[str], names: list[str]) -> None:
    command = [str(Path(sys.executable).with_name("trainer-train")), *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    missing = [name for name in names if name not in done.stdout]
    assert not missing, f"{argv}: {missing} not in\n{done.stdout}"
