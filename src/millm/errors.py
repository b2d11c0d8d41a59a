"""Typed errors raised below the HTTP layer.

Every user-facing failure is a `MillmError` subclass carrying an HTTP-agnostic
`status`, an OpenAI error `type`, an optional `param` (the offending request field,
dotted, e.g. ``steering.features[0].index``) and a machine-readable `code`.
`millm.api.errors` is the one place that turns these into HTTP responses.
This module imports only the standard library.
"""

from __future__ import annotations


class MillmError(Exception):
    status: int = 500
    type: str = "server_error"
    default_code: str | None = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after


class InvalidRequest(MillmError):
    """The request is malformed or out of range (400)."""

    status = 400
    type = "invalid_request_error"
    default_code = "invalid_value"


class ContextTooLong(InvalidRequest):
    default_code = "context_length_exceeded"


class PayloadTooLarge(InvalidRequest):
    """The request body is over the configured size limit (413)."""

    status = 413
    default_code = "request_too_large"


class UnsupportedMediaType(InvalidRequest):
    """A write without a JSON content type (or a client header): what a cross-site form could send (415)."""

    status = 415
    default_code = "unsupported_media_type"


class Unauthorized(MillmError):
    """Missing or wrong credentials, here or at the Hub (401)."""

    status = 401
    type = "authentication_error"
    default_code = "unauthorized"


class Forbidden(MillmError):
    status = 403
    type = "permission_error"
    default_code = "forbidden"


class MisdirectedRequest(Forbidden):
    """The Host header names a host this server does not answer to (DNS rebinding guard) (421)."""

    status = 421
    default_code = "invalid_host"


class PathNotAllowed(Forbidden):
    """A local path outside the folders the API may read (one message for all, revealing nothing)."""

    default_code = "path_not_allowed"


class NotFound(MillmError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class Conflict(MillmError):
    """A stale version or a duplicate name (409)."""

    status = 409
    type = "conflict_error"
    default_code = "conflict"


class QueueFull(MillmError):
    """The bounded request queue is full; try again later (429)."""

    status = 429
    type = "rate_limit_error"
    default_code = "queue_full"


class Unavailable(MillmError):
    """No model is loaded, or one is being loaded (503)."""

    status = 503
    type = "server_error"
    default_code = "unavailable"


class OutOfMemory(Unavailable):
    """The device (or host) ran out of memory for this request; others go on, and memory was freed (503)."""

    default_code = "out_of_memory"


class StorageError(Unavailable):
    """The profile database refused a read or write (read-only, full, locked, unreachable); nothing was saved."""

    default_code = "storage_error"


class ModelNotLoaded(Unavailable):
    default_code = "model_not_loaded"


class InsufficientMemory(MillmError):
    """A load was refused by the memory estimate (507 is not an OpenAI status; use 400)."""

    status = 400
    type = "invalid_request_error"
    default_code = "insufficient_memory"

    def __init__(self, message: str, *, estimate: object | None = None, available: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.estimate = estimate  # the millm.hub.memory.MemoryEstimate that did not fit, sent with the error
        self.available = available  # free bytes it was compared with


class SaeError(InvalidRequest):
    """An SAE could not be loaded or does not fit the model."""

    default_code = "sae_error"


class SaeMismatch(SaeError):
    default_code = "sae_mismatch"


class ModelLoadError(InvalidRequest):
    default_code = "model_load_error"


class DownloadError(MillmError):
    status = 502
    type = "server_error"
    default_code = "download_failed"


class InternalError(MillmError):
    """A bug or a deterministic device failure; clients should not retry."""

    status = 500
    type = "server_error"
    default_code = "internal_error"
