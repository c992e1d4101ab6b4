"""Access control with reads protected too (TRAINER_PROTECT_READS=1): every operation of the server's own OpenAPI
document, without a token, with a wrong one and with the right one; probes stay open; the token never reaches the
log. (tests/server/test_limits.py covers the default: mutations protected, reads open.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import ServerProcess, check_problem

pytestmark = pytest.mark.xdist_group("reliability-access")

TOKEN = "reads-too-0123456789-abcdefghij"
OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
#: The dashboard's pages and files hold no data (every value on a page comes from the API), and a signed-out browser
#: must reach the sign-in form: they are open too.
DASHBOARD = {"/", "/runs/run-ffffffffffffffffffff", "/compare", "/start", "/verification", "/static/css/dashboard.css"}
SAMPLE = {
    "run_id": "run-ffffffffffffffffffff",
    "name": "step-000010.safetensors",
    "file": "config.json",
    "asset": "css/dashboard.css",
    "commit": "abc1234",
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("access")
    env: dict[str, str | None] = {"TRAINER_API_TOKEN": TOKEN, "TRAINER_PROTECT_READS": "1"}
    server = ServerProcess.in_folder(root, data_dir, env=env)
    yield server.start()
    assert server.stop() == 0


def operations(server: ServerProcess) -> list[tuple[str, str]]:
    with server.client() as client:
        document = client.get("/openapi.json").json()
    found = []
    for template, item in document["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], template)
        if path.endswith("/files/config.json"):
            path = path.replace("run-ffffffffffffffffffff", "fashion-mnist")
        found += [(method.upper(), path) for method in item if method in ("get", "post")]
    return found


def test_every_operation_but_the_probes_needs_the_token(guarded: ServerProcess) -> None:
    ops = operations(guarded)
    assert len(ops) >= 16
    good = {"Authorization": f"Bearer {TOKEN}"}
    wrong = {"Authorization": f"Bearer {TOKEN[::-1]}"}
    with guarded.client() as client:
        for method, path in ops:
            if path in OPEN | DASHBOARD:
                assert client.request(method, path).status_code in (200, 503), path
                continue
            if path == "/api/session":  # signing in cannot need the credential it hands out
                assert client.request(method, path).status_code == (200 if method == "GET" else 422), method
                continue
            check_problem(client.request(method, path), 401, "unauthorized")
            check_problem(client.request(method, path, headers=wrong), 403, "forbidden")
            # The token in a query string is not a credential (it would end up in logs and proxies).
            check_problem(client.request(method, path, params={"access_token": TOKEN}), 401, "unauthorized")
            if path.startswith("/api/events/training"):
                continue  # the all-runs feed with the token is a live stream: its own test below
            # With it, the request reaches the endpoint (an invalid body, so no training starts; unknown ids 404).
            body = {"steps": 0} if method == "POST" else None
            answer = client.request(method, path, headers=good, json=body)
            assert answer.status_code not in (401, 403), (method, path, answer.text[:200])


def test_the_event_stream_needs_the_token_and_opens_with_it(guarded: ServerProcess) -> None:
    with guarded.client() as client:
        check_problem(client.get("/api/events/training"), 401, "unauthorized")
        with client.stream("GET", "/api/events/training", headers={"Authorization": f"Bearer {TOKEN}"}) as stream:
            assert stream.status_code == 200
            assert next(stream.iter_lines()).startswith(":")


def test_the_token_never_reaches_the_log(guarded: ServerProcess) -> None:
    log = guarded.log()
    assert TOKEN not in log and TOKEN[::-1] not in log and "access_token" not in log


def test_readiness_names_no_path_of_this_machine(guarded: ServerProcess) -> None:
    with guarded.client() as client:
        ready = client.get("/readyz")
    assert ready.status_code in (200, 503) and ready.json()["checks"]
    for folder in (guarded.evidence_dir, guarded.data_dir, guarded.work_dir):
        assert str(folder) not in ready.text and str(folder.resolve()) not in ready.text
    assert not re.search(r"(?<![\w.])/(?:tmp|root|home|usr|var)/", ready.text), ready.text
