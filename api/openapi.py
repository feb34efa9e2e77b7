"""The desk API's OpenAPI document, with how a caller signs in and what a refusal looks like.

api.deps finds the caller in the Authorization header or the session cookie itself, without
FastAPI's security classes (each would be one more dependency solved on every request), so
FastAPI's document names no security scheme. It is completed here, once, from each route's
dependencies: the schemes the route accepts, with the scope it needs, and its 401, 403 and
404 answers, each with the body api.errors sends (``detail``, and ``missing_scope`` when a
scope is missing)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api import deps

BEARER, SESSION, CSRF = "bearerToken", "sessionCookie", "csrfHeader"
ADMIN = "org:admin"  # no API token can hold it (core.auth.TOKEN_SCOPES)
ERROR = "ApiError"
INVALID = "HTTPValidationError"  # FastAPI's, for a request its declaration refuses
ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR,
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "One sentence, in the caller's language."},
        "missing_scope": {
            "type": "string",
            "description": "On a 403: the scope the caller does not hold.",
        },
    },
    "required": ["detail"],
}
SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token of the organisation (POST /api/v1/tokens), with its scopes.",
    },
    SESSION: {
        "type": "apiKey",
        "in": "cookie",
        "name": deps.COOKIE,
        "description": "The dashboard's session, from POST /api/v1/auth/login.",
    },
    CSRF: {
        "type": "apiKey",
        "in": "header",
        "name": deps.CSRF_HEADER,
        "description": "With the session cookie, on a request that writes: the login's "
        "csrf_token.",
    },
}
REFUSALS = {
    "401": "No live API token or session: missing, unknown, expired or revoked.",
    "403": "Refused: the caller lacks the scope named in missing_scope, must change the "
    "password first, or sent the session cookie without the right CSRF header.",
    "404": "Not found: also what another organisation's id answers.",
    "422": "Not valid: the fields refused (a list), or a page cursor this API did not give.",
}


@dataclass(frozen=True)
class Caller:
    signed_in: bool  # the route needs a token or a session
    settled: bool  # ... of someone who need not change the password first
    scope: str | None

    @classmethod
    def of(cls, dependant: Dependant) -> Caller:
        calls = list(_calls(dependant))
        scopes = [deps.SCOPE_OF[c] for c in calls if c in deps.SCOPE_OF]
        settled = bool(scopes) or deps.current_principal in calls
        signed_in = settled or deps.any_principal in calls
        return cls(signed_in, settled, scopes[0] if scopes else None)


def _calls(dependant: Dependant) -> Iterator[object]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def install(app: FastAPI) -> None:
    """Complete FastAPI's document the first time it is built (it keeps it thereafter)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(build(), app)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any], app: FastAPI) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SCHEMES)
    components.setdefault("schemas", {})[ERROR] = ERROR_SCHEMA
    paths = schema.get("paths", {})
    # As FastAPI walks them for its document: a router included in the app is one entry.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        path, caller = route.path_format or "", Caller.of(route.dependant)
        for method in route.methods or ():
            operation = paths.get(path, {}).get(method.lower())
            if operation is not None:
                annotate(operation, caller, method, by_id="{" in path)


def annotate(operation: dict[str, Any], caller: Caller, method: str, *, by_id: bool) -> None:
    """The operation's security and its refusals (``by_id``: its path names a record)."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if caller.signed_in:
        scopes = [] if caller.scope is None else [caller.scope]
        writes = method not in deps.SAFE_METHODS
        session = {SESSION: scopes, CSRF: []} if writes else {SESSION: scopes}
        tokens = [] if caller.scope == ADMIN else [{BEARER: scopes}]
        operation["security"] = [*tokens, session]
        responses.setdefault("401", {})
        if caller.settled or writes:
            responses.setdefault("403", {})
    if by_id:
        responses.setdefault("404", {})
    for status, response in responses.items():
        # A refusal is api.errors' body; a 422 declared by hand (a page cursor refused) is that
        # or FastAPI's own list of fields.
        if status.startswith("4") and "content" not in response:
            schema: dict[str, Any] = {"$ref": f"#/components/schemas/{ERROR}"}
            if status == "422":
                schema = {"anyOf": [{"$ref": f"#/components/schemas/{INVALID}"}, schema]}
            response["description"] = REFUSALS.get(status, response.get("description", ""))
            response["content"] = {"application/json": {"schema": schema}}
