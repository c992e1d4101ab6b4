"""The errors a client can see, drawn once.

Every one becomes an RFC 9457 ``application/problem+json`` body with a stable snake_case ``code``:

    ApiError                         (status, code, title)
    ├── BadRequest                   400 bad_request
    │   ├── InvalidJson              400 invalid_json
    │   ├── InvalidParameter         400 invalid_parameter
    │   └── InvalidLastEventId       400 invalid_last_event_id
    ├── Unauthorized                 401 unauthorized
    ├── Forbidden                    403 forbidden
    │   ├── CrossSiteRequest         403 cross_site_request
    │   └── OriginNotAllowed         403 origin_not_allowed
    ├── NotFound                     404 not_found
    │   ├── RunNotFound              404 run_not_found
    │   ├── CheckpointNotFound       404 checkpoint_not_found
    │   ├── EvidenceFileNotFound     404 evidence_file_not_found
    │   ├── DatasetFileNotFound      404 dataset_file_not_found
    │   └── VerificationNotFound     404 verification_not_found
    ├── MethodNotAllowed             405 method_not_allowed
    ├── Conflict                     409 conflict
    │   ├── DatasetUnavailable       409 dataset_unavailable
    │   ├── IdempotencyConflict      409 idempotency_key_conflict
    │   ├── RunNotCancellable        409 run_not_cancellable
    │   ├── RunNotResumable          409 run_not_resumable
    │   ├── EvidenceNotReady         409 evidence_not_ready
    │   ├── EvidenceDamagedError     409 evidence_damaged
    │   ├── VerificationUnreadable   409 verification_unreadable
    │   └── NoTokenConfigured        409 no_token_configured
    ├── PayloadTooLarge              413 payload_too_large
    ├── UnsupportedMediaType         415 unsupported_media_type
    ├── ValidationFailed             422 validation_failed   (carries ``errors``: [{field, message}])
    ├── HeadersTooLarge              431 headers_too_large
    ├── TooManyRequests              429 too_many_requests   (carries ``retry_after`` seconds)
    │   └── QueueFull                429 queue_full
    ├── ServiceUnavailable           503 service_unavailable (carries ``retry_after`` seconds)
    │   ├── TooManySubscribers       503 too_many_subscribers
    │   ├── ShuttingDown             503 shutting_down
    │   └── ExecutorUnavailable      503 executor_unavailable
    └── InsufficientStorage          507 insufficient_storage

Errors from other libraries (jsonschema, the dataset cache, the file system) are translated where they enter.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """Base of every client-visible error; the message names the thing and the fix."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def problem(self, instance: str, request_id: str) -> dict[str, Any]:
        """The RFC 9457 body (schemas/problem.schema.json)."""
        body: dict[str, Any] = {
            "type": f"https://trainer-tinygrad.dev/problems/{self.code.replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
            "instance": instance,
            "request_id": request_id,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


class BadRequest(ApiError):
    status, code, title = 400, "bad_request", "Bad request"


class InvalidJson(BadRequest):
    code, title = "invalid_json", "Request body is not valid JSON"


class InvalidParameter(BadRequest):
    code, title = "invalid_parameter", "Invalid query parameter"


class InvalidLastEventId(BadRequest):
    code, title = "invalid_last_event_id", "Invalid Last-Event-ID"


class Unauthorized(ApiError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(ApiError):
    status, code, title = 403, "forbidden", "Credentials refused"


class CrossSiteRequest(Forbidden):
    code, title = "cross_site_request", "Cross-site request refused"


class OriginNotAllowed(Forbidden):
    code, title = "origin_not_allowed", "Origin not allowed"


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class RunNotFound(NotFound):
    code, title = "run_not_found", "Unknown run"


class CheckpointNotFound(NotFound):
    code, title = "checkpoint_not_found", "Unknown checkpoint"


class EvidenceFileNotFound(NotFound):
    code, title = "evidence_file_not_found", "Unknown evidence file"


class DatasetFileNotFound(NotFound):
    code, title = "dataset_file_not_found", "Unknown dataset file"


class VerificationNotFound(NotFound):
    code, title = "verification_not_found", "Unknown verification report"


class MethodNotAllowed(ApiError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class DatasetUnavailable(Conflict):
    code, title = "dataset_unavailable", "Dataset not available"


class IdempotencyConflict(Conflict):
    code, title = "idempotency_key_conflict", "Idempotency key reused with a different request"


class RunNotCancellable(Conflict):
    code, title = "run_not_cancellable", "Run already finished"


class RunNotResumable(Conflict):
    code, title = "run_not_resumable", "Run cannot be resumed"


class EvidenceNotReady(Conflict):
    code, title = "evidence_not_ready", "Evidence manifest not written yet"


class EvidenceDamagedError(Conflict):
    code, title = "evidence_damaged", "Run evidence cannot be trusted"


class VerificationUnreadable(Conflict):
    code, title = "verification_unreadable", "Verification report cannot be read"


class NoTokenConfigured(Conflict):
    code, title = "no_token_configured", "Nothing to sign in to"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(ApiError):
    status, code, title = 422, "validation_failed", "Request body failed validation"


class HeadersTooLarge(ApiError):
    status, code, title = 431, "headers_too_large", "Request header fields too large"


class TooManyRequests(ApiError):
    status, code, title = 429, "too_many_requests", "Too many requests"


class QueueFull(TooManyRequests):
    code, title = "queue_full", "Run queue is full"


class ServiceUnavailable(ApiError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


class TooManySubscribers(ServiceUnavailable):
    code, title = "too_many_subscribers", "Too many event-stream subscribers"


class ShuttingDown(ServiceUnavailable):
    code, title = "shutting_down", "Server is shutting down"


class ExecutorUnavailable(ServiceUnavailable):
    code, title = "executor_unavailable", "Training executor unavailable"


class InsufficientStorage(ApiError):
    status, code, title = 507, "insufficient_storage", "Evidence disk full"


#: Generic errors for a bare HTTP status (Tornado's own 404/405/...); keyed by status.
BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    431: HeadersTooLarge,
    429: TooManyRequests,
    503: ServiceUnavailable,
}
