"""OpenAPI (drf-spectacular) additions: the bearer scheme, problem+json errors on every
operation, and the SSE endpoint (an async Django view that drf-spectacular cannot see)."""

from __future__ import annotations

import copy
import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from twins.problems import PROBLEMS_EXTENSION

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA = {
    "type": "object", "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
    },
    "additionalProperties": True,
}
SECURITY = [{"agentToken": []}, {"cookieAuth": []}]


class AgentTokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Bearer <token>`` (``aiw.authentication.AgentTokenAuthentication``)."""

    target_class = "aiw.authentication.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema) -> dict:
        return {"type": "http", "scheme": "bearer",
                "description": "An agent token: `aiw_<prefix>_<secret>`."}


def _query(name: str, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
            "description": description}


SUBSCRIBE = {
    "get": {
        "operationId": "subscribe_retrieve",
        "summary": "Follow the change feed as Server-Sent Events",
        "description": (
            "`id:` is the cursor, `event:` the event type, `data:` a change-event.v1 object. "
            "Resumes after `Last-Event-ID` or `since` with /diff semantics. Comment lines are "
            "heartbeats. A final `aiw.reconnect` or `aiw.error` event (stream-control.v1) "
            "precedes a close by the server. Never ends on its own."),
        "tags": ["subscribe"],
        "parameters": [
            _query("since", "Cursor to resume after (0 = from the beginning)."),
            _query("types", "Comma-separated event types or resource types."),
            _query("twin", "Only events of this twin (a slug)."),
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "schema": {"type": "string"}, "description": "Overrides `since`."},
        ],
        "security": SECURITY,
        "responses": {
            "200": {"description": "An endless text/event-stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        },
    },
}


#: Why each error status is answered; views add statuses of their own (409, 413, ...) with
#: ``extend_schema(extensions={PROBLEMS_EXTENSION: [409]})``.
PROBLEM_REASONS = {
    400: "Invalid request: a parameter or body field outside its schema (named in `errors`), "
         "or a rule across fields.",
    401: "No credentials, or an unknown, revoked or expired token.",
    403: "The caller may not do this (role, per-twin grant, or token scope).",
    404: "No such object, or one on a twin outside the caller's scope.",
    409: "The object's state does not allow this now (e.g. not pending, already executing).",
    410: "Gone.",
    413: "The body is larger than the server reads.",
    415: "The body is not `application/json`.",
    429: "Rate limit of the token exceeded; `Retry-After` says when to retry.",
}


def _statuses(operation: dict) -> set[int]:
    """The error statuses ``operation`` can answer, from what it takes and who may call it."""
    statuses = set(operation.pop(PROBLEMS_EXTENSION, []))
    security = operation.get("security", [])
    statuses |= {401, 429} | (set() if {} in security else {403})
    params = operation.get("parameters", [])
    body = operation.get("requestBody", {}).get("content", {})
    if body:
        statuses.add(400)
    if set(body) == {"application/json"}:  # DRF parses it: any other media type is a 415
        statuses.add(415)
    if any(p["in"] == "query" for p in params):
        statuses.add(400)
    if any(p["in"] == "path" for p in params):
        statuses.add(404)
    return statuses


def _summary(operation: dict) -> str:
    """The first sentence of the view's docstring without its ``GET /path:`` prefix."""
    text = (operation.get("description") or "").strip()
    first = re.split(r"(?<=\.)\s|\n\n", text, maxsplit=1)[0].replace("\n", " ")
    first = re.sub(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ", "", first).rstrip(".")
    word = first.split(" ", 1)[0]
    return first[:1].upper() + first[1:] if word.isalpha() else first  # not "Telemetry.v1"


def _problem(status: int) -> dict:
    return {"description": PROBLEM_REASONS.get(status, "An error."),
            "content": {"application/problem+json": {"schema": PROBLEM_REF}}}


def add_streams_and_problems(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: add /subscribe and the Problem component; give every operation a
    summary (its view's first docstring sentence unless ``extend_schema`` names one) and a
    problem+json response for each error status it can answer (``_statuses``: 401/403/429 by
    its security, 400/415 for a body, 400 for query parameters, 404 for path parameters, plus
    the view's ``x-problems``) and a problem+json ``default`` for anything else."""
    result.setdefault("paths", {})["/subscribe"] = copy.deepcopy(SUBSCRIBE)
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path_item in result["paths"].values():
        for operation in path_item.values():
            if not operation.get("summary") and _summary(operation):
                operation["summary"] = _summary(operation)
            responses = operation.setdefault("responses", {})
            for status in sorted(_statuses(operation)):
                responses.setdefault(str(status), _problem(status))
            responses.setdefault("default", {
                "description": "An error (RFC 9457 problem details).",
                "content": {"application/problem+json": {"schema": PROBLEM_REF}},
            })
    return result
