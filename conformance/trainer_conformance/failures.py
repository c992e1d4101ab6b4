"""Everything the suite raises on purpose, drawn once:

    ConformanceError                 base class
    ├── CheckFailure (AssertionError) a check found the target not conforming: title, message, evidence paths
    ├── CheckSkipped                 a check does not apply, or a check it depends on could not observe anything
    ├── SuiteError                   the suite itself could not run (exit status 2)
    │   └── TargetUnreachable        no HTTP answer from the target (connection refused, timeout, reset)
    └── ClientError                  the Python client (TrainerClient) could not do what it was asked
        ├── APIError                 the server answered an error: status, problem `code` and `detail`
        └── ChecksumMismatch         a downloaded checkpoint does not hash to what the server listed

The client also raises TargetUnreachable when no answer comes. Errors from httpx, json and safetensors are
translated where they enter, so checks, the runner and client users see this family.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConformanceError(Exception):
    """Base of every exception the suite raises on purpose."""


class CheckFailure(ConformanceError, AssertionError):
    """The target does not meet a requirement. `evidence` lists paths inside the verification folder."""

    def __init__(self, title: str, message: str, evidence: Iterable[str] = ()) -> None:
        super().__init__(f"{title}: {message}")
        self.title = title
        self.message = message
        self.evidence = [e for e in evidence if e]


class CheckSkipped(ConformanceError):
    """The check does not apply to this target or run (the reason says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SuiteError(ConformanceError):
    """The suite could not run at all; the CLI exits with status 2."""


class TargetUnreachable(SuiteError):
    """The target gave no HTTP answer."""


class ClientError(ConformanceError):
    """Base of what TrainerClient raises besides TargetUnreachable."""


class APIError(ClientError):
    """The server answered with an error status; `code` and `detail` come from its problem+json body."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class ChecksumMismatch(ClientError):
    """A downloaded checkpoint's SHA-256 differs from the server's listing or header (nothing was written)."""
