"""The API's one error mapping: every error a client receives has the shape of
`api.schemas.ErrorBody` (`detail`, `request_id`, and `errors` for refused fields), and no SQL,
host name, key or driver message ever reaches a client. Those go to the log under the request's
id, which every response carries in `X-Request-ID` and every error body in `request_id`, so a
lab can quote it.

Statuses:
- 4xx: the request is wrong and retrying it unchanged will not help (the routes' own
  HTTPExceptions, refused fields, a value the database cannot store);
- 503: a dependency is unreachable and the same request can succeed shortly (the database,
  object storage, the task queue);
- 500: a bug; the body says only which request id to quote.

The OpenAPI document is completed here too (`document_errors`): every operation lists the error
statuses it can answer, each with the `ErrorBody` schema, derived from the route itself (path
parameters: 404; any parameter or body: 422; a form body: 400; dependencies marked with
`answers`, such as the API-key check: 401, or the database session: 503), plus what a route
declares in `responses=` (409, 413, 415, ...). Routes added later get the same without code of
their own.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
import urllib3
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from kombu.exceptions import OperationalError as BrokerOperationalError
from minio.error import S3Error, ServerError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.readiness import describe_error
from api.schemas import ErrorBody, FieldError

log = logging.getLogger("karyoflow.api")

REQUEST_ID_HEADER = "X-Request-ID"
# a caller's own id is kept when it looks like one (a proxy's, a lab system's); anything else
# is replaced, so no client text reaches the log lines unchecked
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")

DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)  # gone, refused, pool exhausted
STORAGE_DOWN = (urllib3.exceptions.HTTPError, ServerError)  # refused, timed out, a 5xx from S3
# S3 error codes that a retry can cure; any other (access denied, no such bucket) is a
# misconfiguration: a 500
STORAGE_BUSY_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}
BROKER_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, BrokerOperationalError)
UNSTORABLE_VALUE = "a field holds a value that cannot be stored (too long or a control character)"


def unavailable_detail(what: str) -> str:
    """The 503's detail for an unreachable dependency ("database", "object storage", ...)."""
    return f"{what} unavailable; try again shortly"


class Unavailable(Exception):
    """A dependency is unreachable and retrying will help: a 503 with `public` as its detail.
    Raise it `from` the dependency's own error: that one is logged, never sent."""

    def __init__(self, public: str) -> None:
        super().__init__(public)
        self.public = public


# -- the request id --


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or "-"


class RequestIdMiddleware:
    """Gives every HTTP request an id (the caller's `X-Request-ID` when well formed, else a new
    one) in `request.state.request_id` and on the response's `X-Request-ID` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        rid = given if _CALLER_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (REQUEST_ID_HEADER.lower().encode(), rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


# -- the handlers --


def error_response(
    request: Request,
    status: int,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    rid = request_id(request)
    body = ErrorBody(detail=detail, request_id=rid, errors=errors or [])
    # set here too: a 500 is answered outside the middleware that adds it to every other response
    return JSONResponse(body.model_dump(), status_code=status, headers={**(headers or {}), REQUEST_ID_HEADER: rid})


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """The routes' own refusals (404, 409, 413, ...): their detail is written for the client."""
    return error_response(request, error.status_code, str(error.detail), headers=error.headers)


def _field_error(error: dict[str, Any]) -> FieldError:
    # the refused value itself (`input`) is left out: it may be large, binary or a secret
    return FieldError(loc=list(error.get("loc", ())), msg=str(error.get("msg", "")), type=str(error.get("type", "")))


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    fields = [_field_error(e) for e in error.errors()]
    summary = "; ".join(f"{'.'.join(str(part) for part in f.loc)}: {f.msg}" for f in fields)
    return error_response(request, 422, f"invalid request: {summary}"[:2000], errors=fields)


def invalid_field(loc: tuple[str | int, ...], msg: str) -> RequestValidationError:
    """A field refused by a route's own check, answered like FastAPI's: 422 with `errors`."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


async def unstorable_value(request: Request, error: DataError) -> JSONResponse:
    """A value the database refused (a control character, a field too long) that the request's
    checks let through: the client's to change, so a 422; the statement stays in the log."""
    log.warning(
        "request %s: the database refused a value: %s", request_id(request), describe_error(error.orig or error)
    )
    return error_response(request, 422, UNSTORABLE_VALUE)


def _unavailable(request: Request, what: str, error: BaseException) -> JSONResponse:
    log.error("request %s: %s unavailable: %s", request_id(request), what, describe_error(error))
    return error_response(request, 503, unavailable_detail(what))


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    return _unavailable(request, "database", getattr(error, "orig", None) or error)


async def storage_unavailable(request: Request, error: Exception) -> JSONResponse:
    return _unavailable(request, "object storage", error)


async def broker_unavailable(request: Request, error: Exception) -> JSONResponse:
    return _unavailable(request, "task queue", error)


async def storage_error(request: Request, error: S3Error) -> JSONResponse:
    if error.code in STORAGE_BUSY_CODES:
        return _unavailable(request, "object storage", error)
    return await internal_error(request, error)


async def dependency_unavailable(request: Request, error: Unavailable) -> JSONResponse:
    cause = error.__cause__ or error
    log.error("request %s: %s (%s)", request_id(request), error.public, describe_error(cause))
    return error_response(request, 503, error.public)


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    rid = request_id(request)
    log.error("request %s: %s %s failed", rid, request.method, request.url.path, exc_info=error)
    return error_response(request, 500, f"internal error; the service's log has the details under request id {rid}")


def install_error_handling(app: FastAPI) -> None:
    """The request id, every exception handler and the errors in the OpenAPI document."""
    app.add_middleware(RequestIdMiddleware)
    handlers: list[tuple[type[Exception], Callable]] = [
        (StarletteHTTPException, http_error),
        (RequestValidationError, validation_error),
        (DataError, unstorable_value),
        (Unavailable, dependency_unavailable),
        (S3Error, storage_error),
        *[(error_type, database_unavailable) for error_type in DATABASE_DOWN],
        *[(error_type, storage_unavailable) for error_type in STORAGE_DOWN],
        *[(error_type, broker_unavailable) for error_type in BROKER_DOWN],
        (Exception, internal_error),  # last resort (Starlette answers it outside the middleware)
    ]
    for error_type, handler in handlers:
        app.add_exception_handler(error_type, handler)
    plain_openapi = app.openapi
    documented: list[dict[str, Any]] = []  # FastAPI makes the document anew when routes change

    def openapi() -> dict[str, Any]:
        document = plain_openapi()
        if not any(document is done for done in documented):
            document_errors(document, app.routes)
            documented[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


# -- the OpenAPI document --

# dependency -> the statuses it may end a request with (filled by `answers`)
DEPENDENCY_STATUSES: dict[Callable, frozenset[int]] = {}

ERROR_DESCRIPTIONS = {
    400: "The request body could not be parsed",
    401: "No valid credentials",
    404: "Not found (another clinic's resources are not found either)",
    409: "Not possible in the resource's current state",
    413: "Too large",
    415: "Unsupported media type",
    422: "A field was refused: `errors` says which and why",
    500: "A bug: quote the request id",
    503: "A dependency (database, object storage, task queue) is unreachable: retry shortly",
}
ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
REQUEST_ID_DOC = {"description": "The request's id (the log's key for it)", "schema": {"type": "string"}}


def answers(*statuses: int) -> Callable[[Callable], Callable]:
    """Marks a dependency that may end a request with `statuses`: every route that depends on
    it, directly or through another dependency, documents them."""

    def mark(dependency: Callable) -> Callable:
        DEPENDENCY_STATUSES[dependency] = frozenset(statuses)
        return dependency

    return mark


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from _dependencies(dependency)


def error_statuses(route: RouteContext) -> set[int]:
    """The error statuses a route (as included, with its routers' responses and dependencies)
    can answer, from its parameters and dependencies."""
    statuses = {500}
    dependants = [route.dependant, *_dependencies(route.dependant)]
    for dependant in dependants:
        statuses |= DEPENDENCY_STATUSES.get(dependant.call, frozenset())  # type: ignore[arg-type]
    if any(d.path_params for d in dependants):
        statuses.add(404)
    if any(d.path_params or d.query_params or d.header_params or d.cookie_params for d in dependants):
        statuses.add(422)
    if route.body_field is not None:
        statuses |= {400, 422}  # an unparsable body, a refused field
    statuses |= {int(status) for status in route.responses if str(status).isdigit() and int(status) >= 400}
    return statuses


def document_errors(openapi: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    """Adds every route's error statuses with the `ErrorBody` schema (FastAPI's own 422 schema
    replaced) and the X-Request-ID header of every response."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    for route in iter_route_contexts(list(routes)):  # included routers' routes, with their prefixes
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        statuses = error_statuses(route)
        for method in route.methods:
            operation = openapi["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in statuses:
                responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS.get(status, "Error")})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and ("content" not in response or status == "422"):
                    response["content"] = ERROR_REF
                response.setdefault("headers", {})[REQUEST_ID_HEADER] = REQUEST_ID_DOC
    text = repr(openapi["paths"])
    if "#/components/schemas/HTTPValidationError" not in text:
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
