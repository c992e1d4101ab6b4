"""The process edges: a bad spec is refused before any work, a missing dataset fails cleanly, `device` answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from trainer_harness import run_trainer, spec
from trainer_tinygrad.spec import SpecError, check_spec

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def config_validator() -> jsonschema.Draft202012Validator:
    """The contract's validator for a resolved config, with its `$ref`s to the other schemas resolvable."""
    docs = [json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")]
    registry: Registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)
    schema = next(d for d in docs if d["$id"].endswith("/training-config.schema.json"))
    return jsonschema.Draft202012Validator(schema, registry=registry)


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
    ],
)
def test_a_bad_spec_fails_with_invalid_spec_and_exit_2(text: str, names: str, tmp_path: Path) -> None:
    run = run_trainer(text, tmp_path / "out", tmp_path / "no-data")
    assert [e["event"] for e in run.events] == ["failed"]
    assert run.returncode == 2 and run.terminal["code"] == "invalid_spec"
    assert names in run.terminal["reason"]
    assert not (tmp_path / "out").exists(), "nothing is created for a refused spec"


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


@pytest.mark.parametrize(
    "request_",
    [{}, {"model": "convnet", "epochs": 1.5}, {"optimizer": "sgd", "eval_samples": 500}, {"steps": 7, "seed": 9}],
)
def test_every_resolved_config_is_a_valid_spec_and_matches_the_schema(request_: dict[str, Any]) -> None:
    config = spec(**request_)
    assert check_spec(config) == config
    config_validator().validate(config)


def test_check_spec_refuses_what_the_schema_refuses() -> None:
    validator = config_validator()
    for bad in (spec() | {"seed": -1}, spec() | {"eval_samples": 0}, spec() | {"optimizer": "rmsprop"}):
        assert not validator.is_valid(bad)
        with pytest.raises(SpecError):
            check_spec(bad)
