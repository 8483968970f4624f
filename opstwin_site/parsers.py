"""The JSON parser every API view uses: strict about what JSON may carry into the database.

DRF's ``JSONParser`` already refuses the ``NaN``/``Infinity`` constants, but not a number that
overflows to infinity (``1e999``), which PostgreSQL then refuses inside ``jsonb`` (a 500), nor
a document nested so deeply that Python's parser raises ``RecursionError`` (a 500). Both are
client errors: this parser answers them with DRF's ``ParseError`` (400, a problem body through
the site's exception handler).
"""

from __future__ import annotations

import codecs
import json
import math

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(text: str) -> object:
    """Parse JSON ``text``; raise ``ValueError`` on non-finite numbers and ``NaN``/``Infinity``,
    ``RecursionError`` on documents nested deeper than the interpreter's recursion limit."""
    return json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)


class StrictJSONParser(JSONParser):
    """``application/json`` bodies through ``loads_strict``; any defect is a 400 ParseError."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
            return loads_strict(text)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
