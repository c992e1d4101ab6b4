"""A client generated from the reference server's served /openapi.json has every operation, and works.

openapi-python-client follows `$ref`s to components and drops refs into a component's `$defs`; the served bundle
gives every `$defs` entry a component of its own, so nothing is dropped. Runs where openapi-python-client is
installed (the `openapi-client` tox environment).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tooling.launcher import LaunchedServer, launch

pytest.importorskip("openapi_python_client")
pytestmark = [pytest.mark.xdist_group("openapi-client")]

PACKAGE = "trainer_api_client"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LaunchedServer, dict[str, object]]]:
    """A real reference server (it needs no dataset to describe itself) and the document it serves."""
    root = tmp_path_factory.mktemp("openapi")
    env = {**os.environ, "MOCKS_DISABLED": "1", "DEV": os.environ.get("DEV", "CPU")}
    server = launch(["--evidence-dir", str(root / "evidence"), "--data-dir", str(root / "data")],
                    log_path=root / "server.log", env=env, wait_ready=False)  # fmt: skip
    try:
        document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
        yield server, document
    finally:
        server.stop(timeout=30)


@pytest.fixture(scope="module")
def generated(served: tuple[LaunchedServer, dict[str, object]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client openapi-python-client generates from the served document."""
    _, document = served
    root = tmp_path_factory.mktemp("generated")
    spec = root / "openapi.json"
    spec.write_text(json.dumps(document))
    command = Path(sys.executable).with_name("openapi-python-client")
    argv = [str(command if command.exists() else shutil.which("openapi-python-client")), "generate", "--path",
            str(spec), "--output-path", str(root / PACKAGE), "--meta", "none"]  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Warning" not in output, output  # a dropped operation or model is reported as a warning
    return root


def operations(document: dict[str, object]) -> list[tuple[str, str]]:
    """(first tag, operationId) of every operation."""
    paths = document["paths"]
    assert isinstance(paths, dict)
    return [(op["tags"][0], op["operationId"]) for item in paths.values() for op in item.values()
            if isinstance(op, dict) and "operationId" in op]  # fmt: skip


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_the_served_document_has_no_ref_into_a_nested_defs(served: tuple[LaunchedServer, dict[str, object]]) -> None:
    text = json.dumps(served[1])
    assert "$defs" not in text
    source = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "openapi.json").read_text())
    assert operations(served[1]) == operations(source) and len(operations(source)) == 29


def test_every_operation_is_generated_and_importable(
    served: tuple[LaunchedServer, dict[str, object]], generated: Path
) -> None:
    sys.path.insert(0, str(generated))
    try:
        missing = []
        for tag, operation_id in operations(served[1]):
            try:
                module = importlib.import_module(f"{PACKAGE}.api.{snake(tag)}.{snake(operation_id)}")
            except ImportError:
                missing.append(operation_id)
                continue
            if not hasattr(module, "sync_detailed"):
                missing.append(operation_id)
        assert missing == []
    finally:
        sys.path.remove(str(generated))


def test_the_generated_client_talks_to_the_server(
    served: tuple[LaunchedServer, dict[str, object]], generated: Path
) -> None:
    sys.path.insert(0, str(generated))
    try:
        client_module = importlib.import_module(f"{PACKAGE}.client")
        health = importlib.import_module(f"{PACKAGE}.api.service.health")
        listing = importlib.import_module(f"{PACKAGE}.api.runs.list_runs")
        client = client_module.Client(base_url=served[0].url)
        answer = health.sync_detailed(client=client)
        assert answer.status_code == 200 and json.loads(answer.content)["mocks"] is False
        runs = listing.sync(client=client)
        assert runs is not None and runs.runs == []
    finally:
        sys.path.remove(str(generated))
