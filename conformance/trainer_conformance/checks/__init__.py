"""Every check, registered on import, in section order (see registry.CHECKS)."""

from . import checkpoints, errors, events, evidence, health, metrics, mocks, runs

__all__ = ["checkpoints", "errors", "events", "evidence", "health", "metrics", "mocks", "runs"]
