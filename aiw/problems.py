"""RFC 9457 problem details (``application/problem+json``) for every API error."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from django.http import JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from policy.errors import PolicyError

PROBLEM_TYPE = "https://opstwin.dev/problems/"


def problem(status: int, title: str, detail: str = "", **extra) -> JsonResponse:
    """A problem+json response for plain Django views (outside DRF)."""
    body = {"type": PROBLEM_TYPE + str(status), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JsonResponse(body | extra, status=status, content_type="application/problem+json")


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

    Maps policy errors to their status, ``ObjectDoesNotExist`` to 404 and ``ValueError`` to 400.
    """
    if isinstance(exc, PolicyError):
        return policy_problem(exc)
    if isinstance(exc, ValueError):
        exc = exceptions.ValidationError(str(exc))
    if isinstance(exc, ObjectDoesNotExist):
        exc = exceptions.NotFound("no such object")
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data.get("detail", response.data) if isinstance(response.data, dict) \
        else response.data
    title = getattr(exc, "default_detail", "Error")
    response.data = _body(response.status_code, str(title), detail)
    response.content_type = "application/problem+json"
    return response


def policy_problem(exc: PolicyError) -> Response:
    """A DRF Response for a policy error (approve/reject/execute endpoints)."""
    body = _body(exc.status, exc.title, str(exc))
    return Response(body, status=exc.status, content_type="application/problem+json")
