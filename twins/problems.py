"""RFC 9457 problem details (``application/problem+json``): the one error envelope of the API.

Three layers produce it: ``problem()`` for errors a view returns itself, the DRF exception
handler for everything DRF raises (validation, 401/403, 404, 405, 429 with ``Retry-After``),
and ``ProblemMiddleware`` for what Django answers outside any view (an unknown URL, a 500) on
API requests. Body: ``{"type", "title", "status", "detail"}`` plus problem-specific members
(``errors`` for invalid fields, ``resync`` for a lost cursor, ...).
"""

from __future__ import annotations

from http import HTTPStatus

from django.core.exceptions import ObjectDoesNotExist
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from twins.errors import ServiceError

PROBLEM_TYPE = "https://opstwin.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
#: OpenAPI operation extension listing a view's own error statuses (409, 413, ...):
#: ``extend_schema(extensions={PROBLEMS_EXTENSION: [409]})``; ``aiw.openapi`` documents them.
PROBLEMS_EXTENSION = "x-problems"


def problem_body(status: int, title: str, detail: str = "", **extra) -> dict:
    """The problem document for ``status`` (``type`` is ``PROBLEM_TYPE + status``)."""
    body = {"type": PROBLEM_TYPE + str(status), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return body | extra


def problem(status: int, title: str, detail: str = "", *, headers: dict | None = None,
            **extra) -> JsonResponse:
    """A problem+json response for plain Django views (outside DRF)."""
    return JsonResponse(problem_body(status, title, detail, **extra), status=status,
                        content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _body(status: int, title: str, detail) -> dict:
    body = {"type": PROBLEM_TYPE + str(status), "title": title, "status": status}
    if isinstance(detail, dict | list):
        body["errors"] = detail
        body["detail"] = "the request has invalid fields; see errors"
    else:
        body["detail"] = str(detail)
    return body


def problem_exception_handler(exc, context):
    """DRF exception handler: every error becomes a problem+json body, never a bare 500.

    Maps every ``ServiceError`` to its status, ``ObjectDoesNotExist`` to 404 and ``ValueError``
    to 400.
    """
    if isinstance(exc, ServiceError):
        return service_problem(exc)
    if isinstance(exc, ValueError):
        exc = exceptions.ValidationError(str(exc))
    if isinstance(exc, ObjectDoesNotExist):
        exc = exceptions.NotFound("no such object")
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data.get("detail", response.data) if isinstance(response.data, dict) \
        else response.data
    title = str(getattr(exc, "default_detail", "Error"))
    if "{" in title:  # a template such as 'Method "{method}" not allowed.'
        title = HTTPStatus(response.status_code).phrase
    response.data = _body(response.status_code, title, detail)
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def service_problem(exc: ServiceError) -> Response:
    """A DRF Response for a service error (its ``status``, ``title`` and message; an
    ``errors`` attribute, field → messages, becomes the body's ``errors`` member)."""
    body = _body(exc.status, exc.title, str(exc))
    if isinstance(getattr(exc, "errors", None), dict):
        body["errors"] = exc.errors
    return Response(body, status=exc.status, content_type=PROBLEM_CONTENT_TYPE)


def is_api_request(request: HttpRequest) -> bool:
    """True for requests to DRF or AIW views, and for any client that does not ask for HTML
    (agents, curl); browsers asking for HTML pages keep Django's HTML error pages."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            match = None
    if match is not None:
        view_class = getattr(match.func, "cls", None) or getattr(match.func, "view_class", None)
        if (isinstance(view_class, type) and issubclass(view_class, APIView)) or \
                (match.url_name or "").startswith("aiw-"):
            return True
    return "text/html" not in request.headers.get("Accept", "")


def _is_json(response: HttpResponse) -> bool:
    content_type = response.get("Content-Type", "").split(";")[0].strip()
    return content_type == "application/json" or content_type.endswith("+json")


def as_problem(response: HttpResponse) -> JsonResponse:
    """The problem+json equivalent of a non-JSON error response (same status, key headers)."""
    status = response.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    headers = {name: response[name] for name in KEPT_HEADERS if response.has_header(name)}
    return problem(status, title, f"{title} ({status})", headers=headers)


class ProblemMiddleware:
    """Turns Django's own HTML error pages (404 for unknown URLs, 405, 500, ...) into
    problem+json for API requests; JSON and streaming responses pass through untouched."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (response.status_code >= 400 and not response.streaming and not _is_json(response)
                and is_api_request(request)):
            return as_problem(response)
        return response
