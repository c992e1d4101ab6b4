"""HTTP handlers: thin; they parse, delegate and answer. Dependencies come from the route table in app.py."""

from .base import BaseHandler, NotFoundHandler, Policy
from .runs import (
    CancelHandler,
    CheckpointFileHandler,
    CheckpointsHandler,
    EvidenceFileHandler,
    EvidenceHandler,
    ResumeHandler,
    RunHandler,
    RunMetricsHandler,
    RunsHandler,
)
from .service import (
    DatasetFileHandler,
    DatasetsHandler,
    HealthHandler,
    MetricsHandler,
    OpenApiHandler,
    ReadyHandler,
)
from .session import SessionHandler
from .stream import EventStreamHandler

__all__ = [
    "BaseHandler",
    "CancelHandler",
    "CheckpointFileHandler",
    "CheckpointsHandler",
    "DatasetFileHandler",
    "DatasetsHandler",
    "EventStreamHandler",
    "EvidenceFileHandler",
    "EvidenceHandler",
    "HealthHandler",
    "MetricsHandler",
    "NotFoundHandler",
    "OpenApiHandler",
    "Policy",
    "ReadyHandler",
    "ResumeHandler",
    "RunHandler",
    "RunMetricsHandler",
    "RunsHandler",
    "SessionHandler",
]
