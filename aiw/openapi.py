"""OpenAPI (drf-spectacular) additions: the bearer scheme, problem+json errors on every
operation, and the SSE endpoint (an async Django view that drf-spectacular cannot see)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

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
SECURITY = [{"agentToken": []}, {"cookieAuth": []}, {"basicAuth": []}]


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


def add_streams_and_problems(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: add /subscribe, the Problem component and a problem+json
    ``default`` response to every operation that lacks one."""
    result.setdefault("paths", {})["/subscribe"] = SUBSCRIBE
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path_item in result["paths"].values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("default", {
                "description": "An error (RFC 9457 problem details).",
                "content": {"application/problem+json": {"schema": PROBLEM_REF}},
            })
    return result
