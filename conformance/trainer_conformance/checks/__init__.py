"""Every check, registered on import; one module per section, named for it (see registry.SECTIONS)."""

from . import checkpoints, errors, evidence, fuzz, health, metrics, mocks, runs, sse

__all__ = ["checkpoints", "errors", "evidence", "fuzz", "health", "metrics", "mocks", "runs", "sse"]
