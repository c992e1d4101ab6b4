"""The one home of every URL the server answers: a name, a path template, and how a link to it is built.

The route table in app.py is generated from `PATHS` (Tornado's named routes), and every link the server hands out
(a run's `links`, a checkpoint's `url`, `Location`) is built by `url()` from the same template, so a path is written
down once.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

#: Route name -> path template; `{name}` is one path segment, `{name:path}` may contain slashes.
PATHS: dict[str, str] = {
    "dashboard": "/",
    "dashboard_run": "/runs/{run_id}",
    "dashboard_compare": "/compare",
    "dashboard_start": "/start",
    "dashboard_verification": "/verification",
    "static": "/static/{asset:path}",
    "runs": "/api/training/runs",
    "run": "/api/training/runs/{run_id}",
    "run_metrics": "/api/training/runs/{run_id}/metrics",
    "run_cancel": "/api/training/runs/{run_id}/cancel",
    "run_resume": "/api/training/runs/{run_id}/resume",
    "run_checkpoints": "/api/training/runs/{run_id}/checkpoints",
    "run_checkpoint": "/api/training/runs/{run_id}/checkpoints/{name}",
    "run_evidence": "/api/training/runs/{run_id}/evidence",
    "run_evidence_file": "/api/training/runs/{run_id}/evidence/{file:path}",
    "events": "/api/events/training",
    "session": "/api/session",
    "verifications": "/api/verifications",
    "verification": "/api/verifications/{commit}",
    "verification_file": "/api/verifications/{commit}/files/{file:path}",
    "datasets": "/api/datasets",
    "dataset_file": "/api/datasets/{name}/files/{file}",
    "healthz": "/healthz",
    "readyz": "/readyz",
    "metrics": "/metrics",
    "openapi": "/openapi.json",
}

_PARAM = re.compile(r"\{(\w+)(:path)?\}")


def pattern(name: str) -> str:
    """The Tornado route regex of a named path: each `{x}` becomes a named group."""
    return _PARAM.sub(lambda m: f"(?P<{m.group(1)}>{'.+' if m.group(2) else '[^/]+'})", PATHS[name])


def url(route: str, query: dict[str, str] | None = None, **params: str) -> str:
    """A relative link to a named path, its parameters percent-encoded (`/` kept only in `:path` ones)."""

    def fill(match: re.Match[str]) -> str:
        return quote(str(params[match.group(1)]), safe="/" if match.group(2) else "")

    path = _PARAM.sub(fill, PATHS[route])
    return f"{path}?{urlencode(query)}" if query else path
