"""The evidence folder: its only writer (`EvidenceStore`), the lock that gives it one owner, the rules a run's
event log keeps, and the offline audit (`verify-evidence`)."""

from .integrity import log_problems
from .lock import FolderLock, FolderLocked
from .store import (
    CHECKPOINTS,
    CONFIG,
    EVENTS,
    MANIFEST,
    PROVENANCE,
    REPAIRS,
    REPORT,
    TRAINER_LOG,
    CheckpointRejected,
    EvidenceDamaged,
    EvidenceError,
    EvidenceStore,
    EvidenceWriteError,
    StoredRun,
    is_checkpoint_name,
)

__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "EVENTS",
    "MANIFEST",
    "PROVENANCE",
    "REPAIRS",
    "REPORT",
    "TRAINER_LOG",
    "CheckpointRejected",
    "EvidenceDamaged",
    "EvidenceError",
    "EvidenceStore",
    "EvidenceWriteError",
    "FolderLock",
    "FolderLocked",
    "StoredRun",
    "is_checkpoint_name",
    "log_problems",
]
