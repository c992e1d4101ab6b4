"""The evidence directory and its only writer.

Layout, per run: ``<root>/training/<run_id>/`` holding ``config.json``, ``provenance.json``, ``metrics.jsonl`` (the
durable event log, append-only), ``checkpoints/*.safetensors``, ``trainer.log`` (the training process's stderr, when
it ended), ``repairs.jsonl`` (only when start-up recovery had to repair something), ``report.html`` (the evidence as a
page, rendered from the files above when the run ends) and ``manifest.json`` (written last: every other file with
bytes and sha256).

Writes are all or nothing. Every JSON document is validated against its schema, then goes through a temporary file
in the same directory, fsync, rename: a reader never sees half a file. metrics.jsonl grows by one ``write()`` of a
whole line per event; when that write fails or comes up short (a full disk), the file is cut back to the last whole
line and the caller gets an `EvidenceWriteError`, so a line is either whole in the log or absent.

A full disk must still let a run say how it ended: each active run keeps a small reserve file (``.reserve``) that is
given back just before its `end` event and manifest are written.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from trainer_tinygrad.files import fsync_dir, sha256_file, write_atomic

from trainer_tinygrad.clock import utc_now

from ..assets import Assets, bundled
from ..lifecycle import RUN_ID_PATTERN
from ..schemas import Contract
from . import report
from .integrity import log_problems

log = logging.getLogger(__name__)

CHECKPOINT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+\.safetensors$")
CONFIG, PROVENANCE, EVENTS, MANIFEST, TRAINER_LOG, REPAIRS, REPORT = (
    "config.json",
    "provenance.json",
    "metrics.jsonl",
    "manifest.json",
    "trainer.log",
    "repairs.jsonl",
    report.REPORT,
)
CHECKPOINTS = "checkpoints"
#: Files of a run folder that the store writes and serves by name (checkpoints are served from checkpoints/).
RUN_FILES = (CONFIG, PROVENANCE, EVENTS, MANIFEST, TRAINER_LOG, REPAIRS, REPORT)
RESERVE = ".reserve"
#: Room kept for a run's last words on a full disk: its `end` line, trainer.log's tail and manifest.json.
RESERVE_BYTES = 256 * 1024
#: The most of a torn line kept (base64) in repairs.jsonl.
_TORN_KEPT = 64 * 1024
_CHUNK = 1 << 20
_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class EvidenceError(Exception):
    """Something under the evidence directory is not as the writer left it (or cannot be written)."""


class EvidenceWriteError(EvidenceError):
    """A write under the evidence directory failed; nothing half-written was left visible. `code` is `disk_full`
    when the disk (or a size limit) ran out of room, `evidence_write_failed` otherwise."""

    def __init__(self, what: str, exc: OSError) -> None:
        self.disk_full = exc.errno in _SPACE_ERRNOS
        self.code = "disk_full" if self.disk_full else "evidence_write_failed"
        reason = "the evidence disk is full" if self.disk_full else "the evidence disk refused the write"
        super().__init__(f"{reason}: could not write {what} ({exc.strerror or exc})")


class CheckpointRejected(EvidenceError):
    """A checkpoint the trainer reported does not match its reported sha256 or size; it was not adopted."""


class EvidenceDamaged(EvidenceError):
    """A run folder whose evidence cannot be trusted (unreadable config, a log that breaks its rules)."""


@dataclass(frozen=True)
class StoredRun:
    """What the evidence directory holds for one run, read back at start-up."""

    run_id: str
    config: dict[str, Any]
    events: list[dict[str, Any]]
    log_bytes: int = 0  # size of metrics.jsonl's whole lines
    torn_tail: bytes = b""  # bytes after the last whole line (a write that never completed)
    stale_files: list[str] = field(default_factory=list)


def dumps(document: Any) -> bytes:
    """Canonical JSON for evidence: UTF-8, no NaN (a NaN is not JSON), keys in insertion order."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def is_checkpoint_name(name: str) -> bool:
    """A plain `*.safetensors` file name (no path, not hidden)."""
    return bool(CHECKPOINT_NAME_PATTERN.match(name)) and not name.startswith(".")


class EvidenceStore:
    """The only writer under the evidence directory."""

    def __init__(self, root: Path, contract: Contract, assets: Assets | None = None) -> None:
        self.root = root
        self.training = root / "training"
        self.contract = contract
        self._assets = assets
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
        """Every folder under training/ named like a run (a folder without config.json never got past creation,
        or was damaged: `read_run` says which)."""
        if not self.training.is_dir():
            return []
        return sorted(p.name for p in self.training.iterdir() if RUN_ID_PATTERN.match(p.name) and p.is_dir())

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use on the evidence disk."""
        stats = os.statvfs(self.training if self.training.is_dir() else self.root)
        return stats.f_bavail * stats.f_frsize

    def probe_writable(self) -> str | None:
        """None when a file can be created, written, synced and removed under training/; else what failed (without
        the folder's path: readiness answers strangers too)."""
        probe = self.training / f".probe-{secrets.token_hex(4)}"
        try:
            self.prepare()
            write_atomic(probe, b"ok")
        except (OSError, EvidenceError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            return f"the evidence directory is not writable: {reason}"
        finally:
            probe.unlink(missing_ok=True)
        return None

    # ----- writes -----
    def create_run(
        self, run_id: str, config: dict[str, Any], provenance: dict[str, Any], first_event: dict[str, Any]
    ) -> None:
        """Make the run's folder with config.json, provenance.json, its reserve and its first event, all durable, or
        nothing at all: on any failure the folder is removed and EvidenceWriteError raised."""
        self.contract.check("evidence-config.schema.json", config)
        self.contract.check("evidence-provenance.schema.json", provenance)
        self.contract.check("event.schema.json", first_event)
        directory = self.run_dir(run_id)
        try:
            (directory / CHECKPOINTS).mkdir(parents=True, exist_ok=False)
            self._reserve(directory)
            write_atomic(directory / PROVENANCE, dumps(provenance))
            write_atomic(directory / CONFIG, dumps(config))
            self.append_event(run_id, first_event, sync=True)
        except (OSError, EvidenceWriteError) as exc:
            self._forget_log(run_id)
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, EvidenceWriteError):
                raise
            raise EvidenceWriteError(f"the new run's folder {run_id}", exc) from exc

    def write_config(self, run_id: str, config: dict[str, Any]) -> None:
        """Replace config.json (the trainer reported its device); validated, atomic."""
        self.contract.check("evidence-config.schema.json", config)
        self._write(run_id, CONFIG, dumps(config))

    def write_provenance(self, run_id: str, provenance: dict[str, Any]) -> None:
        """Replace provenance.json (the trainer reported which dataset bytes it loaded); validated, atomic."""
        self.contract.check("evidence-provenance.schema.json", provenance)
        self._write(run_id, PROVENANCE, dumps(provenance))

    def _write(self, run_id: str, name: str, data: bytes) -> None:
        try:
            write_atomic(self.run_dir(run_id) / name, data)
        except OSError as exc:
            raise EvidenceWriteError(f"{run_id}/{name}", exc) from exc

    def append_event(self, run_id: str, event: dict[str, Any], *, sync: bool = False) -> None:
        """Append one event (validated) to metrics.jsonl as a single write of a whole line, or not at all."""
        self.contract.check("event.schema.json", event)
        line = dumps(event) + b"\n"
        what = f"{run_id}/{EVENTS} (event {event.get('id')})"
        try:
            fd = self._log_fd(run_id)
            end = os.fstat(fd).st_size
        except OSError as exc:
            raise EvidenceWriteError(what, exc) from exc
        try:
            written = os.write(fd, line)
            if written != len(line):
                # A short write is what a filling disk looks like; the next write would raise ENOSPC itself.
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
            if sync:
                os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, end)
            except OSError:
                log.exception("run %s: could not cut %s back to %d bytes after a failed write", run_id, EVENTS, end)
            raise EvidenceWriteError(what, exc) from exc

    def _log_fd(self, run_id: str) -> int:
        fd = self._logs.get(run_id)
        if fd is None:
            fd = os.open(self.run_dir(run_id) / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._logs[run_id] = fd
        return fd

    def _forget_log(self, run_id: str) -> None:
        fd = self._logs.pop(run_id, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

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
            with contextlib.suppress(OSError):
                self.close_log(run_id)

    # ----- the reserve -----
    def _reserve(self, directory: Path) -> None:
        path = directory / RESERVE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.write(fd, b"\0" * RESERVE_BYTES)  # a filesystem without fallocate: real zeros hold the room
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)

    def make_reserve(self, run_id: str) -> None:
        """Set a resumed run's reserve aside again; EvidenceWriteError when there is no room for it."""
        try:
            self._reserve(self.run_dir(run_id))
        except OSError as exc:
            raise EvidenceWriteError(f"{run_id}/{RESERVE}", exc) from exc

    def release_reserve(self, run_id: str) -> None:
        """Give a run's reserve back to the disk, right before its last writes."""
        (self.run_dir(run_id) / RESERVE).unlink(missing_ok=True)

    # ----- checkpoints -----
    def adopt_checkpoint(
        self, run_id: str, name: str, sha256: str, size: int, opener: Callable[[], BinaryIO]
    ) -> Path:
        """Copy a checkpoint from the trainer (`opener()` gives its bytes) into checkpoints/, hashing as it copies;
        rename it into place only when the hash and size equal what the trainer reported. Blocking: run it in an
        executor. CheckpointRejected for a bad checkpoint, EvidenceWriteError when the disk refuses it."""
        if not is_checkpoint_name(name):
            raise CheckpointRejected(f"checkpoint name {name!r} is not a plain *.safetensors file name")
        target = self.run_dir(run_id) / CHECKPOINTS / name
        tmp = target.with_name(f".{name}.tmp-{secrets.token_hex(4)}")
        digest = hashlib.sha256()
        copied = 0
        try:
            try:
                source = opener()
            except OSError as exc:
                raise CheckpointRejected(f"checkpoint {name}: cannot read it from the trainer: {exc}") from exc
            with source, tmp.open("wb") as dst:
                while chunk := source.read(_CHUNK):
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
            raise EvidenceWriteError(f"{run_id}/{CHECKPOINTS}/{name}", exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(target.parent)
        return target

    # ----- the end of an attempt -----
    def write_trainer_log(self, run_id: str, text: str) -> None:
        """trainer.log, the training process's stderr tail; a resumed run's attempts follow one another in it."""
        path = self.run_dir(run_id) / TRAINER_LOG
        previous = path.read_bytes() if path.is_file() else b""
        self._write(run_id, TRAINER_LOG, previous + text.encode("utf-8", errors="replace"))

    def reopen_run(self, run_id: str) -> None:
        """Remove manifest.json of an ended run that is about to be resumed (durably: a folder with a manifest is
        an ended run, and recovery trusts that), and its report, which the next end renders again."""
        directory = self.run_dir(run_id)
        (directory / MANIFEST).unlink(missing_ok=True)
        (directory / REPORT).unlink(missing_ok=True)
        fsync_dir(directory)

    def write_report(self, run_id: str) -> bool:
        """report.html from the run's config, provenance and events (each checked against its schema first); False,
        logged and with no report left behind, when it cannot be written. A report is a view of the evidence: it is
        never a reason for a run's end or its manifest not to be written. Blocking: use an executor."""
        directory = self.run_dir(run_id)
        try:
            config = self.read_config(run_id)
            provenance = json.loads((directory / PROVENANCE).read_text(encoding="utf-8"))
            events = self.read_events(run_id)
            self.contract.check("evidence-config.schema.json", config)
            self.contract.check("evidence-provenance.schema.json", provenance)
            for event in events:
                self.contract.check("event.schema.json", event)
            page = report.render(config, provenance, events, self._assets or bundled())
            # On a nearly full disk the manifest, and other runs' event lines, come first: the report (about the
            # size of metrics.jsonl plus 60 KB) is written only when it leaves a run's reserve worth of room.
            if self.free_bytes() < len(page) + RESERVE_BYTES:
                raise OSError(errno.ENOSPC, f"{len(page)} bytes would leave less than {RESERVE_BYTES} free")
            self._write(run_id, REPORT, page)
        except Exception as exc:
            (directory / REPORT).unlink(missing_ok=True)
            if isinstance(exc, OSError | ValueError | EvidenceError):
                log.warning("run %s: %s not written: %s", run_id, REPORT, exc)
            else:
                log.exception("run %s: %s not written", run_id, REPORT)
            return False
        return True

    def write_manifest(self, run_id: str, status: str, created_at: str) -> dict[str, Any]:
        """report.html, then manifest.json, last: every other file of the run with bytes and sha256. Blocking: use
        an executor."""
        try:
            self.close_log(run_id)
        except OSError as exc:
            raise EvidenceWriteError(f"{run_id}/{EVENTS}", exc) from exc
        self.write_report(run_id)
        directory = self.run_dir(run_id)
        files = []
        for path in self._files(directory):
            digest, size = sha256_file(path)
            files.append({"path": path.relative_to(directory).as_posix(), "bytes": size, "sha256": digest})
        manifest = {"run_id": run_id, "status": status, "created_at": created_at, "files": files}
        self.contract.check("evidence-manifest.schema.json", manifest)
        self._write(run_id, MANIFEST, dumps(manifest))
        return manifest

    @staticmethod
    def _files(directory: Path) -> Iterator[Path]:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST:
                yield path

    # ----- recovery -----
    def created_at(self, run_id: str) -> str:
        """When a run was created, from its config.json ("" when that cannot be read: `read_run` says why)."""
        try:
            value = json.loads((self.run_dir(run_id) / CONFIG).read_text(encoding="utf-8")).get("created_at", "")
        except (OSError, ValueError, AttributeError):
            return ""
        return value if isinstance(value, str) else ""

    def read_run(self, run_id: str) -> StoredRun:
        """config.json and the events of metrics.jsonl. A torn last line (no newline: a write that never completed)
        is returned apart, not as an event. EvidenceDamaged when the folder cannot be trusted: no or unreadable
        config.json, a line in the middle that is not an event, ids that do not run 1..N, two ends in one attempt."""
        directory = self.run_dir(run_id)
        try:
            config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise EvidenceDamaged(f"{CONFIG} is missing") from exc
        except (OSError, ValueError) as exc:
            raise EvidenceDamaged(f"{CONFIG} cannot be read: {exc}") from exc
        problems = [f"{CONFIG}: {e.message}" for e in self.contract.errors("evidence-config.schema.json", config)]
        if problems:
            raise EvidenceDamaged(problems[0])
        path = directory / EVENTS
        try:
            data = path.read_bytes() if path.is_file() else b""
        except OSError as exc:
            raise EvidenceDamaged(f"{EVENTS} cannot be read: {exc}") from exc
        whole, newline, torn = data.rpartition(b"\n")
        events: list[dict[str, Any]] = []
        for number, raw in enumerate(whole.split(b"\n") if whole else [], start=1):
            try:
                event = json.loads(raw)
            except ValueError as exc:
                raise EvidenceDamaged(f"{EVENTS} line {number} is not JSON ({exc}); the log was changed") from exc
            if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
                raise EvidenceDamaged(f"{EVENTS} line {number} is not an event")
            events.append(event)
        problems = log_problems(events)
        if problems:
            raise EvidenceDamaged(f"{EVENTS}: " + "; ".join(problems))
        stale = sorted(
            p.relative_to(directory).as_posix() for p in directory.rglob(".*") if ".tmp" in p.name and p.is_file()
        )
        return StoredRun(
            run_id=run_id,
            config=config,
            events=events,
            log_bytes=len(whole) + len(newline),
            torn_tail=torn,
            stale_files=stale,
        )

    def cut_torn_tail(self, run_id: str, kept_bytes: int, torn: bytes) -> None:
        """Cut metrics.jsonl back to its last whole line and record the repair in repairs.jsonl (what was cut, its
        sha256 and, up to 64 KiB, the bytes themselves): the repair is evidence too."""
        self._forget_log(run_id)
        directory = self.run_dir(run_id)
        repair = {
            "time": utc_now(),
            "file": EVENTS,
            "action": "cut_torn_tail",
            "kept_bytes": kept_bytes,
            "cut_bytes": len(torn),
            "cut_sha256": hashlib.sha256(torn).hexdigest(),
            "cut_base64": base64.b64encode(torn[:_TORN_KEPT]).decode("ascii"),
        }
        self.contract.check("evidence-repair.schema.json", repair)
        try:
            self._append_repair(directory, repair)
            os.truncate(directory / EVENTS, kept_bytes)
        except OSError as exc:
            raise EvidenceWriteError(f"{run_id}/{EVENTS} (cutting a torn last line)", exc) from exc

    def remove_stale_files(self, run_id: str, names: list[str]) -> None:
        """Delete temporary files a killed writer left behind (never listed, never served)."""
        directory = self.run_dir(run_id)
        for name in names:
            (directory / name).unlink(missing_ok=True)

    @staticmethod
    def _append_repair(directory: Path, repair: dict[str, Any]) -> None:
        previous = (directory / REPAIRS).read_bytes() if (directory / REPAIRS).is_file() else b""
        write_atomic(directory / REPAIRS, previous + dumps(repair) + b"\n")

    # ----- reads -----
    def read_config(self, run_id: str) -> dict[str, Any]:
        """The run's config.json."""
        return dict(json.loads((self.run_dir(run_id) / CONFIG).read_text(encoding="utf-8")))

    def read_events(self, run_id: str) -> list[dict[str, Any]]:
        """Every whole line of a run's metrics.jsonl, parsed (for a replay of a log no longer kept in memory)."""
        data = (self.run_dir(run_id) / EVENTS).read_bytes()
        return [json.loads(raw) for raw in data[: data.rfind(b"\n") + 1].splitlines()]

    def read_manifest(self, run_id: str) -> dict[str, Any] | None:
        """The run's manifest.json, or None before the run ended."""
        path = self.run_dir(run_id) / MANIFEST
        with contextlib.suppress(FileNotFoundError):
            return dict(json.loads(path.read_text(encoding="utf-8")))
        return None

    def file(self, run_id: str, relative: str) -> Path:
        """A file of the run by its manifest path; only names the store itself writes are accepted."""
        directory = self.run_dir(run_id)
        if relative in RUN_FILES:
            path = directory / relative
        else:
            folder, _, name = relative.partition("/")
            if folder != CHECKPOINTS or not is_checkpoint_name(name):
                raise FileNotFoundError(relative)
            path = directory / CHECKPOINTS / name
        if not path.is_file():
            raise FileNotFoundError(relative)
        return path
