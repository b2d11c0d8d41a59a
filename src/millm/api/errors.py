"""The one place typed errors become HTTP responses: the OpenAI error envelope.

`MillmError` subclasses carry status, type, param and code; request validation errors
(FastAPI's 422) become 400s naming the first bad field as a dotted `param`; anything else is a
500 that tells clients not to retry. SSE and WebSocket error frames use `error_body` too.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from millm.api import limits
from millm.errors import InsufficientMemory, MillmError, StorageError
from millm.protocol.hub import MemoryEstimateOut
from millm.protocol.openai import ErrorInfo, ErrorResponse
from millm.protocol.validation import validation_message

log = logging.getLogger(__name__)


# `code` of the errors Starlette and FastAPI raise themselves (routing, body parsing, the body size limit).
HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
              413: "request_too_large", 415: "unsupported_media_type"}


def _memory_estimate(exc: MillmError) -> MemoryEstimateOut | None:
    est, free = getattr(exc, "estimate", None), getattr(exc, "available", None)
    if not isinstance(exc, InsufficientMemory) or est is None or free is None:
        return None
    fits = est.total_bytes <= free  # type: ignore[attr-defined]
    return MemoryEstimateOut(**est.to_dict(), available_bytes=free, fits=fits,  # type: ignore[attr-defined]
                             summary=est.describe())  # type: ignore[attr-defined]


def error_body(exc: MillmError) -> dict[str, Any]:
    info = ErrorInfo(message=exc.message, type=exc.type, param=exc.param, code=exc.code,
                     memory_estimate=_memory_estimate(exc))
    return ErrorResponse(error=info).model_dump()


def count_rejected(scope: Any, status: int) -> None:
    """millm_rejected_requests_total{status}: a request answered with an error status (scope: an ASGI scope)."""
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    if runtime is not None:
        runtime.metrics.rejected.labels(str(status)).inc()


def millm_response(exc: MillmError) -> JSONResponse:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status >= 500:
        headers["x-should-retry"] = "true" if exc.retry_after is not None else "false"
    return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)


def _openapi_with_400s(app: FastAPI) -> None:
    """Make /openapi.json say what the API sends: request validation errors are 400s with the OpenAI envelope
    (`_validation` below), so FastAPI's default 422 / HTTPValidationError responses are replaced by a 400."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = default()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "ErrorResponse" not in components:  # (routes that declare their errors put it there)
            js = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in js.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components["ErrorResponse"] = js
        error = {"description": "Bad input: the OpenAI error envelope, with `param` naming the field",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        def envelope(description: str) -> dict[str, Any]:
            return {**error, "description": description}

        for path, operations in schema.get("paths", {}).items():
            for method, op in operations.items():
                responses = op.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", error)
                # what millm.api.security and millm.api.limits answer before the route runs
                if path.startswith(("/v1/", "/api/", "/metrics")):
                    responses.setdefault("401", envelope("The server requires an API key (`Authorization: Bearer "
                                                         "<key>`) and none or a wrong one was sent"))
                if method == "post":
                    responses.setdefault("415", envelope("A POST without `Content-Type: application/json` and without "
                                                         "an Authorization or X-MiLLM-Client header"))
                if "requestBody" in op:
                    responses.setdefault("413", envelope("The body is larger than the max_body_bytes setting"))
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _openapi_with_400s(app)

    @app.exception_handler(MillmError)
    async def _millm(request: Request, exc: MillmError) -> JSONResponse:
        count_rejected(request.scope, exc.status)
        if exc.status >= 500:
            # 503s with Retry-After (loading, switching) are expected; other 5xx are worth an error line.
            log.log(logging.WARNING if exc.retry_after is not None else logging.ERROR, "%s: %s",
                    type(exc).__name__, exc.message)
        return millm_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        count_rejected(request.scope, 400)
        errors = list(exc.errors())
        message, param = validation_message(errors)
        code = "invalid_json" if errors and errors[0].get("type") == "json_invalid" else "invalid_value"
        body = ErrorResponse(error=ErrorInfo(message=message, type="invalid_request_error", param=param,
                                             code=code))
        return JSONResponse(body.model_dump(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        count_rejected(request.scope, exc.status_code)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message, code = str(exc.detail), HTTP_CODES.get(exc.status_code, "invalid_request")
        if exc.status_code == 413 and request.scope.get(limits.SCOPE_KEY) is not None:
            return millm_response(limits.too_large(request.scope[limits.SCOPE_KEY]))
        if exc.status_code == 400 and message == "There was an error parsing the body":
            # FastAPI's words for a body json.loads raised on with anything but a JSONDecodeError
            code = "invalid_json"
            if isinstance(exc.__cause__, UnicodeDecodeError):
                message = "the request body is not valid JSON: it is not UTF-8 text"
            elif isinstance(exc.__cause__, RecursionError):
                message = "the request body is not valid JSON here: arrays or objects are nested too deeply"
            else:
                message = "the request body could not be parsed as JSON"
        body = ErrorResponse(error=ErrorInfo(message=message, type=kind, param=None, code=code))
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    async def _storage(request: Request, exc: DBAPIError) -> JSONResponse:
        # The transaction was rolled back, so nothing of the request was stored. The driver's text (SQL, file
        # names) stays in the log.
        log.error("database error: %s", exc)
        count_rejected(request.scope, 503)
        return millm_response(StorageError("the profile database could not be used (it may be read-only, full or "
                                           "unreachable); nothing was saved. Check the server log."))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        count_rejected(request.scope, 500)
        log.exception("unhandled error")
        body = ErrorResponse(error=ErrorInfo(message="internal server error", type="server_error", param=None,
                                             code="internal_error"))
        return JSONResponse(body.model_dump(), status_code=500, headers={"x-should-retry": "false"})
