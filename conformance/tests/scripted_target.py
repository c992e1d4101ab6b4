"""A small scripted training server for the suite's own tests: correct by default, broken in one way on request.

It trains nothing. Each run is a script of events released on a timer; the status, metrics, checkpoint and
evidence endpoints are derived from the events released so far, so everything the server says is mutually
consistent unless a `Breakage` flag breaks exactly one thing. Checkpoints are real safetensors files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import safetensors.numpy
from trainer_conformance.contract import default_contract

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
COMMIT = "abc1234def5678"


@dataclass
class Breakage:
    """Exactly one of these is usually set: what the server gets wrong."""

    mocks: bool = False
    drop_header: str | None = None
    no_echo: bool = False
    padded_sse: bool = False  # heartbeats and repeats of a few states instead of training state
    repeat_events: bool = False  # every metric event sent twice
    slow_sse: bool = False  # too few events
    corrupt_checkpoint: bool = False
    never_finish: bool = False
    frozen_polls: bool = False
    canned_times: bool = False
    skip_ids: bool = False
    ignore_last_event_id: bool = False
    flat_eval_loss: bool = False
    unknown_run_ok: bool = False
    errors_as_json: bool = False
    no_405: bool = False
    create_status: int = 200  # what POST /api/training/runs answers when it starts a run (RFC 9110 allows 201, 202)
    phase: str = "stage1"  # the stage marker in X-Phase and the health body
    not_ready_for_s: float = 0.0  # /readyz answers 503 not_ready this long after the server starts
    refuse_create: bool = False  # POST /api/training/runs answers 409 problem+json
    drop_stream_after: int | None = None  # the first subscription without Last-Event-ID closes after this many events
    drop_every_stream: bool = False  # with drop_stream_after: every subscription is closed that early
    busy_while_first_run: bool = False  # POST /api/training/runs answers 429 until the first run has ended


def ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ScriptedRun:
    run_id: str
    created: float
    config: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    due: list[float] = field(default_factory=list)
    checkpoints: dict[str, bytes] = field(default_factory=dict)

    def released(self) -> list[dict[str, Any]]:
        now = time.time()
        return [e for e, t in zip(self.events, self.due, strict=True) if t <= now]


class ScriptedTarget:
    """Start with `with ScriptedTarget(Breakage(...)) as target:`; `target.url` is the base URL."""

    def __init__(self, breakage: Breakage | None = None, *, interval: float = 0.05, metrics: int = 20) -> None:
        self.breakage = breakage or Breakage()
        self.interval = interval
        self.metric_count = 1 if self.breakage.slow_sse else metrics
        self.runs: dict[str, ScriptedRun] = {}
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.contract = default_contract()
        target = self

        class Handler(_Handler):
            server_target = target

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedTarget:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def create(self, request: dict[str, Any]) -> ScriptedRun:
        seed = int(request.get("seed", 0))
        steps = int(request.get("steps", self.metric_count * 10))
        metric_count = min(self.metric_count, max(1, steps // 10))  # a short run (a control run) is short here too
        config = {
            "dataset": request.get("dataset", "fashion-mnist"),
            "model": request.get("model", "mlp"),
            "steps": steps,
            "batch_size": 128,
            "learning_rate": request.get("learning_rate", 0.001),
            "optimizer": "adam",
            "seed": seed,
            "log_every": 10,
            "checkpoint_every": max(10, steps // 4),
            "eval_samples": request.get("eval_samples"),
        }
        run = ScriptedRun(run_id=f"run-{uuid.uuid4().hex[:12]}", created=time.time(), config=config)
        rng = np.random.default_rng(seed)
        items: list[tuple[str, dict[str, Any]]] = [("status", {"status": "queued"}), ("status", {"status": "running"})]
        for k in range(1, metric_count + 1):
            step = 10 * k
            loss = 2.3 * 0.9**k + 0.01 * rng.random()
            items.append(
                ("metric", {"step": step, "epoch": step / 100, "loss": loss, "accuracy": min(1.0, 0.1 + k / 30)})
            )
            if step % config["checkpoint_every"] == 0 or k == metric_count:
                name = f"step-{step:06d}.safetensors"
                weights = {"model.l1.weight": rng.normal(size=(4, 3)).astype(np.float32)}
                data = safetensors.numpy.save(weights, metadata={"step": str(step)})
                run.checkpoints[name] = data
                eval_loss = 2.0 if self.breakage.flat_eval_loss else 2.0 * 0.8**k
                items.append(
                    ("checkpoint", {"step": step, "name": name, "eval_loss": eval_loss, "eval_accuracy": 0.5,
                                    "eval_samples": 100, "sha256": hashlib.sha256(data).hexdigest(),
                                    "bytes": len(data)})
                )  # fmt: skip
        if not self.breakage.never_finish:
            items += [("status", {"status": "succeeded"}), ("end", {"status": "succeeded", "error": None})]
        for index, (kind, data) in enumerate(items, 1):
            due = run.created + index * self.interval
            stamp = ts(1_600_000_000 + index) if self.breakage.canned_times else ts(due)
            event_id = index * 2 if self.breakage.skip_ids else index
            run.events.append({"id": event_id, "run_id": run.run_id, "type": kind, "time": stamp, "data": data})
            run.due.append(due)
        with self.lock:
            self.runs[run.run_id] = run
        return run

    def run_body(self, run: ScriptedRun) -> dict[str, Any]:
        events = run.released()
        if self.breakage.frozen_polls:
            events = events[:2]
        statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
        metrics = [e for e in events if e["type"] == "metric"]
        checkpoints = [e for e in events if e["type"] == "checkpoint"]
        status = statuses[-1] if statuses else "queued"
        base = f"/api/training/runs/{run.run_id}"
        return {
            "run_id": run.run_id,
            "status": status,
            "created_at": ts(run.created),
            "started_at": ts(run.created + self.interval) if len(statuses) > 1 else None,
            "finished_at": next((e["time"] for e in events if e["data"].get("status") == "succeeded"), None),
            "config": run.config,
            "progress": {"step": metrics[-1]["data"]["step"] if metrics else 0, "total_steps": run.config["steps"]},
            "latest_metrics": {**metrics[-1]["data"], "time": metrics[-1]["time"]} if metrics else None,
            "checkpoints": [self.checkpoint_entry(e) for e in checkpoints],
            "error": None,
            "links": {k: f"{base}/{k}" for k in ("metrics", "events", "checkpoints", "evidence", "cancel")}
            | {"self": base},
        }

    @staticmethod
    def checkpoint_entry(event: dict[str, Any]) -> dict[str, Any]:
        return {**{k: event["data"][k] for k in ("name", "step", "sha256", "bytes", "eval_loss", "eval_accuracy",
                                                 "eval_samples")}, "created_at": event["time"]}  # fmt: skip

    def evidence_files(self, run: ScriptedRun) -> dict[str, bytes]:
        versions = {"python": "3.11", "tinygrad": "0.14.0", "numpy": np.__version__, "service": "0"}
        config = {"run_id": run.run_id, "config": run.config, "device": "CPU", "created_at": ts(run.created),
                  "versions": versions}  # fmt: skip
        provenance = {"run_id": run.run_id, "datasets": [], "commit": COMMIT, "tree_dirty": False,
                      "diff_sha256": None, "host": "test", "seed": run.config["seed"], "mocks_disabled": "1",
                      "created_at": ts(run.created)}  # fmt: skip
        files = {
            "config.json": json.dumps(config).encode(),
            "provenance.json": json.dumps(provenance).encode(),
            "metrics.jsonl": b"".join(json.dumps(e).encode() + b"\n" for e in run.events),
        }
        files.update({f"checkpoints/{name}": data for name, data in run.checkpoints.items()})
        return files


class _Handler(BaseHTTPRequestHandler):
    server_target: ScriptedTarget
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ---- plumbing ---------------------------------------------------------------------------------------------

    def _headers(self, content_type: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        b = self.server_target.breakage
        sent = self.headers.get("X-Request-ID", "")
        echo = sent if REQUEST_ID.match(sent) and not b.no_echo else f"srv-{uuid.uuid4().hex}"
        headers = {
            "X-Request-ID": echo,
            "X-Phase": b.phase,
            "X-Mocks": "true" if b.mocks else "false",
            "X-Commit-SHA": COMMIT,
            "X-Content-Type-Options": "nosniff",
            "Content-Type": content_type,
            "Cache-Control": "no-store",
            **(extra or {}),
        }
        if b.drop_header:
            headers.pop(b.drop_header, None)
        return headers

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in self._headers(content_type, extra).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, body: Any, status: int = 200) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _problem(self, status: int, code: str, detail: str) -> None:
        body = {"type": "about:blank", "title": code, "status": status, "code": code, "detail": detail}
        kind = "application/json" if self.server_target.breakage.errors_as_json else "application/problem+json"
        self._send(status, json.dumps(body).encode(), kind)

    def _run(self, run_id: str) -> ScriptedRun | None:
        run = self.server_target.runs.get(run_id)
        if run is None and not self.server_target.breakage.unknown_run_ok:
            self._problem(404, "run_not_found", f"no run {run_id}")
        elif run is None:
            self._json({})
        return run

    # ---- routes -----------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        t = self.server_target
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        parts = path.strip("/").split("/")
        if path in ("/healthz", "/readyz"):
            waiting = path == "/readyz" and time.monotonic() - t.started < t.breakage.not_ready_for_s
            status = "ok" if path == "/healthz" else ("not_ready" if waiting else "ready")
            self._json({"status": status, "mocks": t.breakage.mocks, "phase": t.breakage.phase, "version": "0.0.1",
                        "commit": COMMIT, "time": ts(time.time())}, 503 if waiting else 200)  # fmt: skip
        elif path == "/api/datasets":
            self._json({"datasets": [{"name": "fashion-mnist", "present": True, "verified": True, "source": "x"}]})
        elif path == "/api/training/runs":
            self._json({"runs": [t.run_body(r) for r in reversed(t.runs.values())], "next_cursor": None})
        elif path == "/api/events/training":
            self._events(query.get("run_id", [""])[0])
        elif parts[:3] == ["api", "training", "runs"] and len(parts) >= 4:
            run = self._run(parts[3])
            if run is None:
                return
            rest = parts[4:]
            if not rest:
                self._json(t.run_body(run))
            elif rest == ["metrics"]:
                self._metrics(run, query)
            elif rest == ["checkpoints"]:
                self._json({"run_id": run.run_id, "checkpoints": t.run_body(run)["checkpoints"]})
            elif rest[0] == "checkpoints" and len(rest) == 2 and rest[1] in run.checkpoints:
                data = run.checkpoints[rest[1]]
                extra = {
                    "Digest": "sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode(),
                    "X-Checksum-SHA256": hashlib.sha256(data).hexdigest(),
                }
                if t.breakage.corrupt_checkpoint:
                    data = data[:-8] + bytes(b ^ 0xFF for b in data[-8:])
                self._send(200, data, "application/octet-stream", extra)
            elif rest == ["evidence"]:
                files = t.evidence_files(run)
                self._json({"run_id": run.run_id, "status": "succeeded", "created_at": ts(run.created),
                            "files": [{"path": k, "bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()}
                                      for k, v in files.items()]})  # fmt: skip
            elif rest[0] == "evidence" and "/".join(rest[1:]) in t.evidence_files(run):
                self._send(200, t.evidence_files(run)["/".join(rest[1:])], "application/octet-stream")
            else:
                self._problem(404, "not_found", path)
        else:
            self._problem(404, "not_found", path)

    def do_POST(self) -> None:
        t = self.server_target
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        path = urlsplit(self.path).path
        if path == "/api/training/runs":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._problem(400, "invalid_json", "body is not JSON")
            if problems := t.contract.problems("run-create-request", body):
                return self._problem(422, "invalid_body", problems[0])
            first = min(t.runs.values(), key=lambda r: r.created, default=None)
            if t.breakage.busy_while_first_run and first and t.run_body(first)["status"] != "succeeded":
                return self._problem(429, "queue_full", "one run at a time: try again when it has ended")
            if t.breakage.refuse_create:
                return self._problem(409, "dataset_not_verified", "dataset fashion-mnist is not verified: import it")
            run = t.create(body)
            self._send(t.breakage.create_status, json.dumps(t.run_body(run)).encode(), "application/json",
                       {"Location": f"/api/training/runs/{run.run_id}"})  # fmt: skip
        elif path.endswith("/cancel"):
            run = self._run(path.split("/")[-2])
            if run is not None:
                self._json(t.run_body(run))
        elif path.endswith("/resume"):
            self._problem(409, "run_not_resumable", "only an interrupted or failed run can be resumed")
        else:
            self._problem(404, "not_found", path)

    def _not_allowed(self) -> None:
        if self.server_target.breakage.no_405:
            self._problem(404, "not_found", self.path)
        else:
            self._problem(405, "method_not_allowed", self.command)

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._not_allowed()

    def _metrics(self, run: ScriptedRun, query: dict[str, list[str]]) -> None:
        after = int(query.get("after_step", ["-1"])[0])
        limit = int(query.get("limit", ["100"])[0])
        released = run.released()
        metrics = [{**e["data"], "time": e["time"]} for e in released if e["type"] == "metric"]
        page = [m for m in metrics if m["step"] > after][:limit]
        more = len([m for m in metrics if m["step"] > after]) > limit
        evals = [
            {"step": e["data"]["step"], "eval_loss": e["data"]["eval_loss"], "eval_accuracy": 0.5, "time": e["time"]}
            for e in released
            if e["type"] == "checkpoint"
        ]
        self._json({"run_id": run.run_id, "metrics": page, "evals": evals,
                    "next_after_step": page[-1]["step"] if more else None})  # fmt: skip

    def _events(self, run_id: str) -> None:
        t, b = self.server_target, self.server_target.breakage
        run = self._run(run_id)
        if run is None:
            return
        self.send_response(200)
        headers = self._headers("text/event-stream", {"X-Accel-Buffering": "no", "Connection": "close"})
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        last = self.headers.get("Last-Event-ID")
        cursor = int(last) if last and last.isdigit() and not b.ignore_last_event_id else 0
        extra_id = 10_000
        drop_after = b.drop_stream_after if not last or b.drop_every_stream else None
        sent = 0
        try:
            self.wfile.write(b"retry: 1000\n\n")
            if drop_after == 0:
                return
            while True:
                released = [e for e in run.released() if e["id"] > cursor]
                for original in released:
                    event = original
                    if b.padded_sse and event["type"] == "metric" and event["data"]["step"] > 30:
                        # The same early metric again and again, wrapped in heartbeats: no new training state.
                        extra_id += 1
                        event = {**run.events[2], "id": extra_id}
                        self.wfile.write(b": heartbeat\n\n" * 5)
                    self._write_event(event)
                    sent += 1
                    if drop_after is not None and sent >= drop_after:
                        return  # the connection closes mid-run, as a proxy or a restart would close it
                    if b.repeat_events and event["type"] == "metric":
                        self._write_event(event)
                    cursor = max(cursor, original["id"])
                    if event["type"] == "end":
                        return
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                time.sleep(t.interval / 2)
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            self.close_connection = True

    def _write_event(self, event: dict[str, Any]) -> None:
        self.wfile.write(f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self.wfile.flush()
