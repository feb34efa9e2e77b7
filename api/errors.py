"""Errors the desk API answers with: one translated sentence, no internals (SECURITY.md R22)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.security_headers import HEADERS
from core.db import retryable
from core.i18n import gettext, negotiate

log = logging.getLogger("amparo.api")


def N_(message: str) -> str:
    return message


NOT_FOUND = N_("not found")
FORBIDDEN = N_("your role does not allow this")
UNAUTHENTICATED = N_("log in first")
BAD_CSRF = N_("missing or wrong CSRF token")
CHANGE_PASSWORD = N_("change your password first")
INVALID = N_("the request is not valid")
TOO_MANY = N_("too many attempts; wait and try again")
TOO_LARGE = N_("the request is too large")
HAS_NUL = N_("the request contains a NUL character, which no field accepts")
INTERNAL = N_("internal error; it was logged for the operators")
CONFLICT = N_("this conflicts with the current state")
BUSY = N_("the server is busy: nothing was changed; try again in a moment")
BUSY_RETRY_AFTER = "1"  # seconds: the transaction it lost to is over by then
# A dashboard page's 500, for a person (the bot's own sentence; INTERNAL is the API's).
SORRY = N_("Sorry, something went wrong on our side. Please try again.")
GENERIC = {
    401: UNAUTHENTICATED,
    403: FORBIDDEN,
    404: NOT_FOUND,
    405: N_("method not allowed"),
    409: CONFLICT,
    413: TOO_LARGE,
    429: TOO_MANY,
}


class ApiError(Exception):
    """An answer to the client: HTTP status and an untranslated message id; ``extra``: more
    fields of the API's JSON answer (never on a dashboard page), e.g. the scope missing."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra


def locale_of(request: Request) -> str:
    return locale_from(request.headers.get("accept-language", ""))


def locale_from(accept_language: str) -> str:
    """The best supported language in Accept-Language (by q-value), else English."""
    ranked = []
    for i, part in enumerate(accept_language.split(",")[:20]):
        tag, _sep, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag and tag != "*" and q > 0:
            ranked.append((-q, i, tag))
    return negotiate(tag for _q, _i, tag in sorted(ranked))


def translated(request: Request, message: str) -> str:
    return gettext(locale_of(request))(message)


def answer(request: Request, status: int, message: str, **extra: object) -> JSONResponse:
    body: dict[str, object] = {"detail": translated(request, message), **extra}
    return JSONResponse(body, status_code=status)


# Paths outside the desk API that machines call: they answer JSON as the API does.
MACHINE_PATHS = ("/healthz", "/metrics", "/hooks/telegram")


def for_people(request: Request) -> bool:
    """A dashboard request: a responder's browser, on a page or a form outside /api/."""
    path: str = request.scope["path"]
    return not path.startswith("/api/") and path not in MACHINE_PATHS


def failed(request: Request, status: int, message: str) -> Response:
    """An error: the API's JSON ``message``, or on a dashboard page the app's page
    (``app.state.error_page``, api.pages) in the responder's language, with a way back to the
    queue and nothing of the error itself (a 500's text is a person's, not ``message``)."""
    if _pages(request):
        response: Response = request.app.state.error_page(request, status, message)
        return response
    return answer(request, status, message)


def _pages(request: Request) -> bool:
    """Whether ``failed`` answers this request with a page."""
    return for_people(request) and getattr(request.app.state, "error_page", None) is not None


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    # The dashboard's routes answer their own refusals; one that still gets here (a session
    # found dead as the request commits: api.deps.get_db) is a page too.
    response: Response
    if exc.extra and not _pages(request):
        response = answer(request, exc.status, exc.message, **exc.extra)
    else:
        response = failed(request, exc.status, exc.message)
    response.headers.update(exc.headers or {})
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code >= 500:
        return failed(request, 500, INTERNAL)
    message = GENERIC.get(exc.status_code, INVALID)
    # An unknown page (404), a form's URL fetched with GET (405): a page on the dashboard.
    response = failed(request, exc.status_code, message)
    response.headers.update(exc.headers or {})  # a 405's Allow
    return response


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if _pages(request):
        # On the dashboard a malformed id in the URL names no page: 404, as an unknown id
        # does; a malformed form or query, 422. Never which field, nor what was sent.
        found = exc.errors()
        in_path = bool(found) and all(tuple(e.get("loc", ()))[:1] == ("path",) for e in found)
        return failed(request, 404 if in_path else 422, NOT_FOUND if in_path else INVALID)
    # Where and what kind of error, and what the schema accepts (CTX_KEYS: an enum's values, a
    # bound), never what was sent: pydantic's "input" would echo secrets back.
    errors = [
        {"loc": list(e.get("loc", ())), "msg": translated(request, INVALID), "type": e["type"]}
        | _accepted(e.get("ctx"))
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


# What a validation error's context may say: taken from the schema, never from the input.
CTX_KEYS = ("expected", "ge", "gt", "le", "lt", "min_length", "max_length")


def _accepted(ctx: object) -> dict[str, object]:
    """``{"ctx": {...}}`` with what the field accepts (an outcome's values, a limit's bound),
    as FastAPI's own answer has it, so a client is told what to send; {} when nothing is."""
    if not isinstance(ctx, dict):
        return {}
    kept = {k: ctx[k] for k in CTX_KEYS if isinstance(ctx.get(k), str | int | float)}
    return {"ctx": kept} if kept else {}


async def _aborted(request: Request, exc: Exception) -> Response:
    """PostgreSQL aborted the request's transaction for another's sake (a deadlock, a
    serialization failure: ``core.db.retryable``); nothing it wrote stays. The request is not
    run again here (its body is read, its handler need not be idempotent): 503 and
    Retry-After ask the client to send it again (a page on the dashboard, JSON on the API).
    Any other database error is a 500."""
    if not retryable(exc):
        raise exc
    log.warning("transaction aborted by the database", extra={"method": request.method})
    response = failed(request, 503, BUSY)
    response.headers["Retry-After"] = BUSY_RETRY_AFTER
    return response


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", extra={"error": type(exc).__name__, "method": request.method})
    response = failed(request, 500, INTERNAL)
    # This answer leaves outside every middleware: it brings its own headers.
    for name, value in HEADERS:
        response.headers[name.decode()] = value.decode()
    return response


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(DBAPIError, _aborted)
    app.add_exception_handler(Exception, _internal)
