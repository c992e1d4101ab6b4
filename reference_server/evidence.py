"""The evidence directory and its only writer.

Layout, per run: ``<root>/training/<run_id>/`` holding ``config.json``, ``provenance.json``, ``metrics.jsonl`` (the
durable event log, append-only), ``checkpoints/*.safetensors``, ``trainer.log`` (the training process's stderr, when
it ended) and ``manifest.json`` (written last: every other file with bytes and sha256).

Every JSON document is validated against its schema before it is written, and every whole file goes through a
temporary file in the same directory, fsync, rename: a reader never sees half a file. metrics.jsonl grows by one
``write()`` of a whole line per event on an O_APPEND descriptor, so a crash can at worst lose the line being written;
a torn tail left by a power cut is cut off when the log is read back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer_tinygrad.files import fsync_dir, sha256_file, write_atomic

from .schemas import Contract

log = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")
CHECKPOINT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+\.safetensors$")
CONFIG, PROVENANCE, EVENTS, MANIFEST, TRAINER_LOG = (
    "config.json",
    "provenance.json",
    "metrics.jsonl",
    "manifest.json",
    "trainer.log",
)
CHECKPOINTS = "checkpoints"
_CHUNK = 1 << 20


class EvidenceError(Exception):
    """Something under the evidence directory is not as the writer left it (or cannot be written)."""


class CheckpointRejected(EvidenceError):
    """A checkpoint the trainer reported does not match its reported sha256 or size; it was not adopted."""


@dataclass(frozen=True)
class StoredRun:
    """What the evidence directory holds for one run, read back at start-up."""

    run_id: str
    config: dict[str, Any]
    events: list[dict[str, Any]]
    torn_tail: bool


def dumps(document: Any) -> bytes:
    """Canonical JSON for evidence: UTF-8, no NaN (a NaN is not JSON), keys in insertion order."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


class EvidenceStore:
    """The only writer under the evidence directory."""

    def __init__(self, root: Path, contract: Contract) -> None:
        self.root = root
        self.training = root / "training"
        self.contract = contract
        self._logs: dict[str, int] = {}

    # ----- layout -----
    def prepare(self) -> None:
        """Create `<root>/training/`; raises EvidenceError when it cannot."""
        try:
            self.training.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvidenceError(f"cannot create {self.training}: {exc}") from exc

    def run_dir(self, run_id: str) -> Path:
        """A run's folder; refuses anything that is not a run id, so no path can leave the evidence tree."""
        if not RUN_ID_PATTERN.match(run_id):
            raise EvidenceError(f"not a run id: {run_id!r}")
        return self.training / run_id

    def run_ids(self) -> list[str]:
        """Every run folder that has a config.json (a folder without one never got past creation)."""
        if not self.training.is_dir():
            return []
        return sorted(
            p.name for p in self.training.iterdir() if RUN_ID_PATTERN.match(p.name) and (p / CONFIG).is_file()
        )

    def probe_writable(self) -> str | None:
        """None when a file can be created, written, synced and removed under training/; else what failed."""
        try:
            self.prepare()
            write_atomic(self.training / f".probe-{secrets.token_hex(4)}", b"ok")
        except (OSError, EvidenceError) as exc:
            return f"{self.training} is not writable: {exc}"
        for probe in self.training.glob(".probe-*"):
            probe.unlink(missing_ok=True)
        return None

    # ----- writes -----
    def create_run(self, run_id: str, config: dict[str, Any], provenance: dict[str, Any]) -> None:
        """Make the run's folder with its config.json and provenance.json (both validated first)."""
        self.contract.check("evidence-config.schema.json", config)
        self.contract.check("evidence-provenance.schema.json", provenance)
        directory = self.run_dir(run_id)
        (directory / CHECKPOINTS).mkdir(parents=True, exist_ok=False)
        write_atomic(directory / PROVENANCE, dumps(provenance))
        # config.json last: a folder counts as a run only once it has one (see run_ids).
        write_atomic(directory / CONFIG, dumps(config))

    def write_config(self, run_id: str, config: dict[str, Any]) -> None:
        """Replace config.json (the trainer reported its device); validated, atomic."""
        self.contract.check("evidence-config.schema.json", config)
        write_atomic(self.run_dir(run_id) / CONFIG, dumps(config))

    def write_provenance(self, run_id: str, provenance: dict[str, Any]) -> None:
        """Replace provenance.json (the trainer reported which dataset bytes it loaded); validated, atomic."""
        self.contract.check("evidence-provenance.schema.json", provenance)
        write_atomic(self.run_dir(run_id) / PROVENANCE, dumps(provenance))

    def append_event(self, run_id: str, event: dict[str, Any], *, sync: bool = False) -> None:
        """Append one event (validated) to metrics.jsonl as a single write of a whole line."""
        self.contract.check("event.schema.json", event)
        fd = self._logs.get(run_id)
        if fd is None:
            path = self.run_dir(run_id) / EVENTS
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._logs[run_id] = fd
        line = dumps(event) + b"\n"
        written = os.write(fd, line)
        if written != len(line):
            raise EvidenceError(f"short write to {run_id}/{EVENTS}: {written} of {len(line)} bytes")
        if sync:
            os.fsync(fd)

    def close_log(self, run_id: str) -> None:
        """fsync and close a run's metrics.jsonl (after its `end` event)."""
        fd = self._logs.pop(run_id, None)
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Close every open event log."""
        for run_id in list(self._logs):
            self.close_log(run_id)

    def adopt_checkpoint(self, run_id: str, source: Path, name: str, sha256: str, size: int) -> Path:
        """Copy a checkpoint out of the trainer's work dir into checkpoints/, hashing as it copies; rename into
        place only when the hash and size equal what the trainer reported. Blocking: run it in an executor."""
        if not CHECKPOINT_NAME_PATTERN.match(name) or name.startswith("."):
            raise CheckpointRejected(f"checkpoint name {name!r} is not a plain *.safetensors file name")
        target = self.run_dir(run_id) / CHECKPOINTS / name
        tmp = target.with_name(f".{name}.tmp-{secrets.token_hex(4)}")
        digest = hashlib.sha256()
        copied = 0
        try:
            with source.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    copied += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            if digest.hexdigest() != sha256 or copied != size:
                raise CheckpointRejected(
                    f"checkpoint {name}: trainer reported sha256 {sha256} ({size} bytes), "
                    f"file has {digest.hexdigest()} ({copied} bytes)"
                )
            tmp.replace(target)
        except OSError as exc:
            raise CheckpointRejected(f"checkpoint {name}: cannot copy from {source}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(target.parent)
        return target

    def write_trainer_log(self, run_id: str, text: str) -> None:
        """trainer.log, the training process's stderr tail; a resumed run's attempts follow one another in it."""
        path = self.run_dir(run_id) / TRAINER_LOG
        previous = path.read_bytes() if path.is_file() else b""
        write_atomic(path, previous + text.encode("utf-8", errors="replace"))

    def reopen_run(self, run_id: str) -> None:
        """Remove manifest.json of an ended run that is about to be resumed (durably: a folder with a manifest is
        an ended run, and recovery trusts that)."""
        directory = self.run_dir(run_id)
        (directory / MANIFEST).unlink(missing_ok=True)
        fsync_dir(directory)

    def write_manifest(self, run_id: str, status: str, created_at: str) -> dict[str, Any]:
        """manifest.json, last: every other file of the run with bytes and sha256. Blocking: use an executor."""
        self.close_log(run_id)
        directory = self.run_dir(run_id)
        files = []
        for path in self._files(directory):
            digest, size = sha256_file(path)
            files.append({"path": path.relative_to(directory).as_posix(), "bytes": size, "sha256": digest})
        manifest = {"run_id": run_id, "status": status, "created_at": created_at, "files": files}
        self.contract.check("evidence-manifest.schema.json", manifest)
        write_atomic(directory / MANIFEST, dumps(manifest))
        return manifest

    @staticmethod
    def _files(directory: Path) -> Iterator[Path]:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST:
                yield path

    # ----- reads -----
    def read_config(self, run_id: str) -> dict[str, Any]:
        """The run's config.json."""
        return dict(json.loads((self.run_dir(run_id) / CONFIG).read_text(encoding="utf-8")))

    def read_run(self, run_id: str) -> StoredRun:
        """config.json and the valid events of metrics.jsonl; a torn last line is reported, not returned."""
        directory = self.run_dir(run_id)
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        events: list[dict[str, Any]] = []
        torn = False
        path = directory / EVENTS
        data = path.read_bytes() if path.is_file() else b""
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            torn = True  # no newline at the end: the last write never completed
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            try:
                event = json.loads(raw)
            except ValueError as exc:
                raise EvidenceError(f"{run_id}/{EVENTS} line {number} is not JSON: {exc}") from exc
            events.append(event)
        return StoredRun(run_id=run_id, config=config, events=events, torn_tail=torn)

    def repair_log(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl with exactly `events` (drops a torn tail); atomic."""
        self.close_log(run_id)
        write_atomic(self.run_dir(run_id) / EVENTS, b"".join(dumps(e) + b"\n" for e in events))

    def read_manifest(self, run_id: str) -> dict[str, Any] | None:
        """The run's manifest.json, or None before the run ended."""
        path = self.run_dir(run_id) / MANIFEST
        with contextlib.suppress(FileNotFoundError):
            return dict(json.loads(path.read_text(encoding="utf-8")))
        return None

    def file(self, run_id: str, relative: str) -> Path:
        """A file of the run by its manifest path; only names the store itself writes are accepted."""
        directory = self.run_dir(run_id)
        if relative in (CONFIG, PROVENANCE, EVENTS, MANIFEST, TRAINER_LOG):
            path = directory / relative
        else:
            folder, _, name = relative.partition("/")
            if folder != CHECKPOINTS or not CHECKPOINT_NAME_PATTERN.match(name) or name.startswith("."):
                raise FileNotFoundError(relative)
            path = directory / CHECKPOINTS / name
        if not path.is_file():
            raise FileNotFoundError(relative)
        return path
