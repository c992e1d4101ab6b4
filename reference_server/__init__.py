"""trainer-tinygrad reference server: training runs over REST and Server-Sent Events, with evidence per run.

Never imports tinygrad: training happens in `python -m trainer_tinygrad train` child processes.
"""

from .app import Service
from .errors import ApiError
from .evidence import EvidenceStore
from .evidence.audit import RunAudit, audit_run
from .lifecycle import TRANSITIONS, RunStatus
from .provenance import SERVICE_VERSION as __version__
from .runs import RunManager
from .schemas import Contract
from .settings import Settings

__all__ = [
    "TRANSITIONS",
    "ApiError",
    "Contract",
    "EvidenceStore",
    "RunAudit",
    "RunManager",
    "RunStatus",
    "Service",
    "Settings",
    "__version__",
    "audit_run",
]
