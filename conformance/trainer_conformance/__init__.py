"""trainer-conformance: verifies any training server over HTTP and writes verification evidence.

It needs only HTTP access to the target: it never imports the server or tinygrad. Public names:
"""

from .contract import Contract, schemas_dir
from .failures import CheckFailure, CheckSkipped, ConformanceError, SuiteError, TargetUnreachable
from .gate import GateOutcome, run_gate
from .inference import Checkpoint, evaluate, logits_for, open_checkpoint
from .probes import Exchange, ProbeRecorder, RecordingClient
from .published import PublishedManifest, manifest_path, read_idx
from .registry import CHECKS, Check, check, select
from .runner import SuiteOutcome, run_suite
from .session import Options, Session
from .sse import ServerSentEvent, SSEDecoder
from .stream import ReceivedEvent, StreamRecording, read_event_stream

__all__ = [
    "CHECKS",
    "Check",
    "CheckFailure",
    "CheckSkipped",
    "Checkpoint",
    "ConformanceError",
    "Contract",
    "Exchange",
    "GateOutcome",
    "Options",
    "ProbeRecorder",
    "PublishedManifest",
    "ReceivedEvent",
    "RecordingClient",
    "SSEDecoder",
    "ServerSentEvent",
    "Session",
    "StreamRecording",
    "SuiteError",
    "SuiteOutcome",
    "TargetUnreachable",
    "check",
    "evaluate",
    "logits_for",
    "manifest_path",
    "open_checkpoint",
    "read_event_stream",
    "read_idx",
    "run_gate",
    "run_suite",
    "schemas_dir",
    "select",
]
