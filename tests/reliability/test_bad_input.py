"""Bad input, table-driven, against one real server that holds one finished run.

Each case is sent as raw bytes (http.client: no path normalisation, no JSON helper), and must get its documented 4xx
as RFC 9457 problem+json valid against schemas/problem.schema.json with the contract headers; afterwards the server
still answers /healthz, and not one byte under the evidence directory has changed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from server_harness import CONTRACT, HEADERS, ServerProcess, start_run, wait_for

pytestmark = pytest.mark.xdist_group("reliability-bad-input")

JSON = {"Content-Type": "application/json"}
RUNS = "/api/training/runs"
RUN = RUNS + "/{RUN}"
KEY = "bad-input-fixture-run"


@dataclass(frozen=True)
class Case:
    """One bad request and the answer the API documents for it."""

    name: str
    method: str
    path: str  # {RUN} becomes the finished run's id
    status: int
    code: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    blames: str | None = None  # the field a 422's errors[] must name

    def __str__(self) -> str:
        return self.name


def post(name: str, body: bytes | str, status: int, code: str, headers: dict[str, str] | None = None) -> Case:
    raw = body.encode() if isinstance(body, str) else body
    return Case(name, "POST", RUNS, status, code, raw, JSON if headers is None else headers)


def get(name: str, path: str, status: int, code: str, headers: dict[str, str] | None = None) -> Case:
    return Case(name, "GET", path, status, code, None, headers or {})


BAD = "invalid_json"
INVALID = "validation_failed"
CASES = [
    # malformed JSON: 400
    post("truncated-object", '{"steps": 10', 400, BAD),
    post("blank-body", " \n", 400, BAD),
    post("trailing-comma", '{"steps": 10,}', 400, BAD),
    post("single-quotes", "{'steps': 10}", 400, BAD),
    post("form-encoded-as-json", "steps=10&model=mlp", 400, BAD),
    post("invalid-utf8", b'{"model": "\xff\xfe"}', 400, BAD),
    post("nested-too-deep", "[" * 20_000, 400, BAD),
    post("nan-steps", '{"steps": NaN}', 400, BAD),
    post("nan-learning-rate", '{"learning_rate": NaN}', 400, BAD),
    post("infinity-learning-rate", '{"learning_rate": Infinity}', 400, BAD),
    post("minus-infinity-learning-rate", '{"learning_rate": -Infinity}', 400, BAD),
    post("overflowing-float", '{"learning_rate": 1e400}', 400, BAD),
    post("5000-digit-integer", '{"steps": 1' + "0" * 5000 + "}", 400, BAD),
    # wrong types: 422 naming the field
    post("array-body", "[1, 2, 3]", 422, INVALID),
    post("string-body", '"train please"', 422, INVALID),
    post("null-body", "null", 422, INVALID),
    post("number-body", "42", 422, INVALID),
    post("steps-as-string", '{"steps": "10"}', 422, INVALID),
    post("steps-fractional", '{"steps": 1.5}', 422, INVALID),
    post("steps-boolean", '{"steps": true}', 422, INVALID),
    post("learning-rate-as-word", '{"learning_rate": "fast"}', 422, INVALID),
    post("batch-size-array", '{"batch_size": []}', 422, INVALID),
    post("dataset-as-number", '{"dataset": 7}', 422, INVALID),
    post("idempotency-key-object", '{"idempotency_key": {}}', 422, INVALID),
    # unknown fields
    post("misspelt-field", '{"stpes": 10}', 422, INVALID),
    post("unknown-nested-field", '{"steps": 10, "extra": {"nested": 1}}', 422, INVALID),
    # out of range
    post("zero-steps", '{"steps": 0}', 422, INVALID),
    post("negative-steps", '{"steps": -5}', 422, INVALID),
    post("too-many-steps", '{"steps": 1000001}', 422, INVALID),
    post("negative-learning-rate", '{"learning_rate": -0.001}', 422, INVALID),
    post("huge-learning-rate", '{"learning_rate": 11}', 422, INVALID),
    post("zero-batch-size", '{"batch_size": 0}', 422, INVALID),
    post("absurd-batch-size", '{"batch_size": 1000000000}', 422, INVALID),
    post("negative-batch-size", '{"batch_size": -128}', 422, INVALID),
    post("zero-epochs", '{"epochs": 0}', 422, INVALID),
    post("momentum-one", '{"optimizer": "sgd", "momentum": 1}', 422, INVALID),
    post("negative-seed", '{"seed": -1}', 422, INVALID),
    post("zero-log-every", '{"log_every": 0}', 422, INVALID),
    post("negative-checkpoint-every", '{"checkpoint_every": -1}', 422, INVALID),
    post("zero-eval-samples", '{"eval_samples": 0}', 422, INVALID),
    post("steps-and-epochs", '{"steps": 10, "epochs": 1}', 422, INVALID),
    post("empty-idempotency-key", '{"idempotency_key": ""}', 422, INVALID),
    post("idempotency-key-with-space", '{"idempotency_key": "a b"}', 422, INVALID),
    # integers that are floats, and limits that apply after defaults are resolved
    Case("steps-integral-float", "POST", RUNS, 422, INVALID, b'{"steps": 50.0}', JSON, "steps"),
    Case("seed-integral-float", "POST", RUNS, 422, INVALID, b'{"seed": 1.0}', JSON, "seed"),
    Case(
        "epochs-past-the-step-maximum", "POST", RUNS, 422, INVALID, b'{"epochs": 1000, "batch_size": 1}', JSON, "epochs"
    ),
    # the Idempotency-Key header: valid like the body field, and never in disagreement with it
    Case(
        "idempotency-header-and-body-differ",
        "POST",
        RUNS,
        422,
        INVALID,
        b'{"idempotency_key": "one-key"}',
        JSON | {"Idempotency-Key": "another-key"},
        "idempotency_key",
    ),
    Case("idempotency-header-with-space", "POST", RUNS, 422, INVALID, b"{}", JSON | {"Idempotency-Key": "a b"}),
    # unknown dataset or model
    post("unknown-dataset", '{"dataset": "imagenet"}', 422, INVALID),
    post("unknown-model", '{"model": "resnet50"}', 422, INVALID),
    post("unknown-optimizer", '{"optimizer": "lbfgs"}', 422, INVALID),
    post("dataset-not-in-cache", '{"dataset": "mnist", "steps": 10}', 409, "dataset_unavailable"),
    post("cifar-not-in-cache", '{"dataset": "cifar10", "steps": 10}', 409, "dataset_unavailable"),
    # body size and media type
    post("body-over-64-KiB", '{"idempotency_key": "' + "k" * 70_000 + '"}', 413, "payload_too_large"),
    post("text-plain", '{"steps": 10}', 415, "unsupported_media_type", {"Content-Type": "text/plain"}),
    post("no-content-type", '{"steps": 10}', 415, "unsupported_media_type", {}),
    post(
        "form-urlencoded",
        "steps=10",
        415,
        "unsupported_media_type",
        {"Content-Type": "application/x-www-form-urlencoded"},
    ),
    post(
        "multipart",
        '--x\r\nContent-Disposition: form-data; name="steps"\r\n\r\n10\r\n--x--\r\n',
        415,
        "unsupported_media_type",
        {"Content-Type": "multipart/form-data; boundary=x"},
    ),
    post(
        "multipart-malformed",
        "--x\r\n\r\n--x--",
        400,
        "bad_request",
        {"Content-Type": "multipart/form-data; boundary=x"},
    ),
    # oversized headers: 431 below Tornado's own limit
    get("one-40-KiB-header", "/healthz", 431, "headers_too_large", {"X-Padding": "p" * 40_000}),
    get("200-headers", RUNS, 431, "headers_too_large", {f"X-Pad-{i}": "p" * 200 for i in range(200)}),
    # path traversal: checkpoint names
    get("checkpoint-dotdot", RUN + "/checkpoints/../../config.json", 404, "not_found"),
    get("checkpoint-encoded-slash", RUN + "/checkpoints/..%2F..%2Fconfig.json", 404, "checkpoint_not_found"),
    get("checkpoint-double-encoded", RUN + "/checkpoints/..%252F..%252Fconfig.json", 404, "checkpoint_not_found"),
    get("checkpoint-encoded-dots", RUN + "/checkpoints/%2e%2e%2fconfig.json", 404, "checkpoint_not_found"),
    get("checkpoint-nul", RUN + "/checkpoints/step-000010.safetensors%00.json", 404, "checkpoint_not_found"),
    get("checkpoint-temp-file", RUN + "/checkpoints/.step-000010.safetensors.tmp-0000", 404, "checkpoint_not_found"),
    # path traversal: evidence names
    get("evidence-dotdot", RUN + "/evidence/../../../../etc/passwd", 404, "evidence_file_not_found"),
    get("evidence-encoded", RUN + "/evidence/..%2F..%2F..%2F..%2Fetc%2Fpasswd", 404, "evidence_file_not_found"),
    get("evidence-through-checkpoints", RUN + "/evidence/checkpoints/../config.json", 404, "evidence_file_not_found"),
    get("evidence-absolute", RUN + "/evidence/%2Fetc%2Fpasswd", 404, "evidence_file_not_found"),
    get(
        "evidence-encoded-checkpoints",
        RUN + "/evidence/checkpoints%2F..%2F..%2Fconfig.json",
        404,
        "evidence_file_not_found",
    ),
    get("evidence-backslash", RUN + "/evidence/..%5C..%5Cconfig.json", 404, "evidence_file_not_found"),
    get("evidence-temp-file", RUN + "/evidence/.manifest.json.tmp-0000", 404, "evidence_file_not_found"),
    # path traversal: dataset files
    get(
        "dataset-file-encoded",
        "/api/datasets/fashion-mnist/files/..%2F..%2Fchecksums.json",
        404,
        "dataset_file_not_found",
    ),
    get("dataset-name-encoded", "/api/datasets/..%2F..%2Fetc/files/passwd", 404, "dataset_file_not_found"),
    get("dataset-stamp-file", "/api/datasets/fashion-mnist/files/.verified.json", 404, "dataset_file_not_found"),
    get("dataset-unlisted-file", "/api/datasets/fashion-mnist/files/checksums.json", 404, "dataset_file_not_found"),
    # run ids: malformed and unknown
    get("run-id-punctuation", RUNS + "/not-a-run!", 404, "run_not_found"),
    get("run-id-invalid-utf8", RUNS + "/%FF%FE", 400, "bad_request"),
    get("run-id-unknown", RUNS + "/run-ffffffffffffffffffff", 404, "run_not_found"),
    get("run-id-5000-chars", RUNS + "/run-" + "a" * 5000, 404, "run_not_found"),
    get("run-id-traversal", RUNS + "/..%2F..%2Fetc", 404, "run_not_found"),
    get("run-id-nul", RUNS + "/run-0123%00", 404, "run_not_found"),
    Case("cancel-unknown-run", "POST", RUNS + "/run-ffffffffffffffffffff/cancel", 404, "run_not_found"),
    Case("resume-unknown-run", "POST", RUNS + "/run-ffffffffffffffffffff/resume", 404, "run_not_found"),
    get("metrics-unknown-run", RUNS + "/run-ffffffffffffffffffff/metrics", 404, "run_not_found"),
    get("events-malformed-run-id", "/api/events/training?run_id=bad!", 400, "invalid_parameter"),
    get("events-unknown-run", "/api/events/training?run_id=run-ffffffffffffffffffff", 404, "run_not_found"),
    # bogus Last-Event-ID
    get(
        "last-event-id-word",
        "/api/events/training?run_id={RUN}",
        400,
        "invalid_last_event_id",
        {"Last-Event-ID": "abc"},
    ),
    get(
        "last-event-id-negative",
        "/api/events/training?run_id={RUN}",
        400,
        "invalid_last_event_id",
        {"Last-Event-ID": "-1"},
    ),
    get(
        "last-event-id-past-end",
        "/api/events/training?run_id={RUN}",
        400,
        "invalid_last_event_id",
        {"Last-Event-ID": "999999"},
    ),
    get(
        "last-event-id-other-run",
        "/api/events/training?run_id={RUN}",
        400,
        "invalid_last_event_id",
        {"Last-Event-ID": "run-ffffffffffffffffffff:1"},
    ),
    get(
        "last-event-id-fraction",
        "/api/events/training?run_id={RUN}",
        400,
        "invalid_last_event_id",
        {"Last-Event-ID": "1.5"},
    ),
    get(
        "last-event-id-40-digits",
        "/api/events/training?run_id={RUN}",
        400,
        "invalid_last_event_id",
        {"Last-Event-ID": "9" * 40},
    ),
    get("last-event-id-query", "/api/events/training?run_id={RUN}&last_event_id=x", 400, "invalid_last_event_id"),
    # query parameters
    get("limit-zero", RUNS + "?limit=0", 400, "invalid_parameter"),
    get("limit-word", RUNS + "?limit=abc", 400, "invalid_parameter"),
    get("limit-over-100", RUNS + "?limit=101", 400, "invalid_parameter"),
    get("limit-full-width-digit", RUNS + "?limit=%EF%BC%95", 400, "invalid_parameter"),
    get("after-step-arabic-indic-digit", RUN + "/metrics?after_step=%D9%A5", 400, "invalid_parameter"),
    get("cursor-bogus", RUNS + "?cursor=run-ffffffffffffffffffff", 400, "invalid_parameter"),
    get("status-unknown", RUNS + "?status=exploded", 400, "invalid_parameter"),
    get("after-step-negative", RUN + "/metrics?after_step=-1", 400, "invalid_parameter"),
    get("metrics-limit-huge", RUN + "/metrics?limit=100000", 400, "invalid_parameter"),
    # state conflicts on the finished run
    Case("cancel-succeeded-run", "POST", RUN + "/cancel", 409, "run_not_cancellable"),
    Case("resume-succeeded-run", "POST", RUN + "/resume", 409, "run_not_resumable"),
    Case("resume-with-options", "POST", RUN + "/resume", 422, INVALID, b'{"steps": 5}', JSON),
    post("idempotency-key-reused", '{"steps": 11, "idempotency_key": "' + KEY + '"}', 409, "idempotency_key_conflict"),
    # unsupported methods
    Case("delete-runs", "DELETE", RUNS, 405, "method_not_allowed"),
    Case("put-run", "PUT", RUN, 405, "method_not_allowed", b"{}", JSON),
    Case("patch-run", "PATCH", RUN, 405, "method_not_allowed", b"{}", JSON),
    Case("get-cancel", "GET", RUN + "/cancel", 405, "method_not_allowed"),
    Case("post-healthz", "POST", "/healthz", 405, "method_not_allowed"),
    Case("trace-runs", "TRACE", RUNS, 405, "method_not_allowed"),
    Case("propfind-runs", "PROPFIND", RUNS, 405, "method_not_allowed"),
    Case("delete-checkpoint", "DELETE", RUN + "/checkpoints/step-000010.safetensors", 405, "method_not_allowed"),
    # unknown endpoints
    get("unknown-api-path", "/api/nope", 404, "not_found"),
    get("runs-prefix", "/api/training", 404, "not_found"),
]


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def send(server: ServerProcess, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
    """One request with the path exactly as given."""
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Answer(response.status, response.msg, response.read())
    finally:
        conn.close()


def evidence_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under the evidence directory, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def target(server: ServerProcess) -> tuple[ServerProcess, str]:
    """The module's server, holding one finished run (two checkpoints) started with an idempotency key."""
    with server.client() as client:
        run = start_run(client, steps=20, log_every=10, checkpoint_every=10, eval_samples=100, idempotency_key=KEY)
        assert wait_for(client, run["run_id"], {"succeeded", "failed"})["status"] == "succeeded"
    return server, run["run_id"]


def check_contract_headers(answer: Answer) -> None:
    for block in ("all", "problem"):
        for name, rule in HEADERS[block].items():
            value = answer.headers.get(name)
            assert value is not None, f"no {name} header"
            if isinstance(rule, str):
                assert value == rule, (name, value)
            elif "pattern" in rule:
                assert re.fullmatch(rule["pattern"], value), (name, value)
            else:
                assert value.startswith(rule["startswith"]), (name, value)


def test_there_are_at_least_40_cases_and_names_are_unique() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_gets_its_documented_problem(case: Case, target: tuple[ServerProcess, str]) -> None:
    server, run_id = target
    evidence = server.evidence_dir
    before = evidence_digest(evidence)
    path = case.path.replace("{RUN}", run_id)
    answer = send(server, case.method, path, case.body, case.headers)
    assert answer.status == case.status, f"{case.method} {path[:120]}: {answer.status} {answer.body[:300]!r}"
    check_contract_headers(answer)
    problem: dict[str, Any] = json.loads(answer.body)
    assert not CONTRACT.errors("problem.schema.json", problem), problem
    assert problem["status"] == case.status and problem["code"] == case.code, problem
    if case.status == 405:
        assert answer.headers.get("Allow") is not None
    if case.status == 422:
        assert problem["errors"] and all(e["field"] for e in problem["errors"])
        if case.blames:
            assert case.blames in {e["field"] for e in problem["errors"]}, problem
    # The server keeps serving, and nothing under the evidence directory changed.
    assert send(server, "GET", "/healthz", None, {}).status == 200
    assert evidence_digest(evidence) == before


def test_no_case_reached_a_server_error(target: tuple[ServerProcess, str]) -> None:
    server, _ = target
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    # /readyz answers 503 until the device probe is back; nothing else may be a 5xx.
    errors = [line for line in log.splitlines() if re.search(r"access: 5\d\d ", line) and " /readyz " not in line]
    assert not errors, errors
