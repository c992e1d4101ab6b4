"""HTTP handlers: thin; they parse, delegate and answer. Dependencies come from the route table in app.py."""

from .base import BaseHandler, NotFoundHandler, Policy
from .pages import AssetHandler, PageHandler
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
from .verification import VerificationFileHandler, VerificationHandler, VerificationsHandler

__all__ = [
    "AssetHandler",
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
    "PageHandler",
    "Policy",
    "ReadyHandler",
    "ResumeHandler",
    "RunHandler",
    "RunMetricsHandler",
    "RunsHandler",
    "SessionHandler",
    "VerificationFileHandler",
    "VerificationHandler",
    "VerificationsHandler",
]
