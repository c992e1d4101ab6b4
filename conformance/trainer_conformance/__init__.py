"""trainer-conformance: verifies any training server over HTTP and writes verification evidence.

It needs only HTTP access to the target: it never imports the server or tinygrad. `TrainerClient` is a typed
Python client for such a server. Public names:
"""

from .client import CheckpointInfo, Event, MetricsPage, Run, TrainerClient
from .contract import Contract, schemas_dir
from .failures import (
    APIError,
    CheckFailure,
    CheckSkipped,
    ChecksumMismatch,
    ClientError,
    ConformanceError,
    SuiteError,
    TargetUnreachable,
)
from .gate import GateOutcome, run_gate
from .inference import Checkpoint, evaluate, logits_for, open_checkpoint
from .pack import write_pack
from .probes import Exchange, ProbeRecorder, RecordingClient
from .profile import Profile, load_profile
from .published import PublishedManifest, manifest_path, read_idx
from .registry import CHECKS, Check, check, select
from .runner import SuiteOutcome, run_suite
from .session import Options, Session
from .sse import ServerSentEvent, SSEComment, SSEDecoder
from .stream import ReceivedEvent, StreamRecording, read_event_stream

__all__ = [
    "CHECKS",
    "APIError",
    "Check",
    "CheckFailure",
    "CheckSkipped",
    "Checkpoint",
    "CheckpointInfo",
    "ChecksumMismatch",
    "ClientError",
    "ConformanceError",
    "Contract",
    "Event",
    "Exchange",
    "GateOutcome",
    "MetricsPage",
    "Options",
    "ProbeRecorder",
    "Profile",
    "PublishedManifest",
    "ReceivedEvent",
    "RecordingClient",
    "Run",
    "SSEComment",
    "SSEDecoder",
    "ServerSentEvent",
    "Session",
    "StreamRecording",
    "SuiteError",
    "SuiteOutcome",
    "TargetUnreachable",
    "TrainerClient",
    "check",
    "evaluate",
    "load_profile",
    "logits_for",
    "manifest_path",
    "open_checkpoint",
    "read_event_stream",
    "read_idx",
    "run_gate",
    "run_suite",
    "schemas_dir",
    "select",
    "write_pack",
]
