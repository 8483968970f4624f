"""Words and numbers for people: status labels, parameters, times with their date and age.

``{% load console %}`` in any dashboard template. No microseconds anywhere: absolute times are
``2 Dec 2026, 16:34:37 UTC``; relative ones round to seconds, minutes, hours or days.
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from policy.choices import Decision, ProposalStatus, RiskLevel
from telemetry.choices import AnomalyKind, AnomalyStatus, Severity

register = template.Library()

LABELS = {str(value): str(label) for choices in (
    ProposalStatus, Decision, RiskLevel, AnomalyStatus, Severity, AnomalyKind)
    for value, label in choices.choices}
LABELS |= {"queued": "Queued", "running": "Running", "succeeded": "Succeeded",
           "cancelled": "Cancelled", "in_flight": "Action in flight", "anomalous": "Anomalous",
           "silent": "Silent", "normal": "Normal", "no_data": "No telemetry yet",
           "unknown": "Liveness unknown", "live": "Live"}
ABSOLUTE = "j M Y, H:i:s T"


@register.filter
def label(value) -> str:
    """A machine status (``pending_approval``) as words (``Pending approval``)."""
    text = str(value or "")
    return LABELS.get(text) or text.replace("_", " ").capitalize()


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@register.filter
def params(value) -> str:
    """Action parameters as ``fraction: 0.1, target: 3`` (``none`` when empty)."""
    if not value:
        return "none"
    if not isinstance(value, dict):
        return _number(value)
    return ", ".join(f"{k}: {_number(v)}" for k, v in value.items())


def _parse(value) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, datetime) else None


@register.filter
def absolute(value) -> str:
    """``2 Dec 2026, 16:34:37 UTC`` (a datetime or an ISO string; ``–`` when empty)."""
    moment = _parse(value)
    if moment is None:
        return "–"
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return date_format(moment, ABSOLUTE)


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


@register.filter
def relative(value, now: datetime | None = None) -> str:
    """``in 12 min`` or ``3 h ago`` from now (``–`` when empty)."""
    moment = _parse(value)
    if moment is None:
        return "–"
    delta = (moment - (now or timezone.now())).total_seconds()
    return f"in {_span(delta)}" if delta >= 0 else f"{_span(delta)} ago"


@register.filter
def when(value):
    """A ``<time>`` element saying both: ``in 12 min (2 Dec 2026, 16:34:37 UTC)``."""
    moment = _parse(value)
    if moment is None:
        return "–"
    return format_html('<time datetime="{}">{} ({})</time>', moment.isoformat(),
                       relative(moment), absolute(moment))



ICONS = {"in_flight": "⟳", "anomalous": "▲", "silent": "‖", "no_data": "○", "unknown": "?",
         "normal": "✓"}
DELTA_WORDS = {"awaiting": "no reading since the command", "converging": "converging",
               "diverged": "diverged"}


def _band(band) -> str:
    return f"{_number(band[0])}…{_number(band[1])}"


def _tile_lines(state) -> list:
    lines = []
    if state.open_anomalies:
        counts = ", ".join(f"{n} {severity}" for severity, n in state.open_by_severity.items())
        lines.append(format_html('<span class="tile-line">{} open</span>', counts))
    lines += [format_html('<span class="tile-line">#{} {}: {}</span>', p.pk, p.action,
                          label(p.status).lower()) for p in state.in_flight]
    lines += [format_html('<span class="tile-line">{} {} (wanted {})</span>', d["metric"],
                          DELTA_WORDS.get(d["status"], d["status"]), _band(d["band"]))
              for d in state.delta]
    lines.append(format_html('<span class="tile-line live-line">{}</span>', _liveness_line(state)))
    return lines


def _liveness_line(state) -> str:
    last = state.last_received
    if last is None:
        return "no telemetry yet"
    if state.liveness == "silent":
        return f"silent: nothing received for {relative(last).removesuffix(' ago')}"
    if state.liveness == "unknown":
        return f"last received {relative(last)} · sampling interval not known yet"
    return f"live · last received {relative(last)}"


@register.simple_tag
def asset_tile(state, href: str):
    """One overview tile of a ``policy.selectors.AssetState``: its state in words and an
    icon (never colour alone), open anomalies, actions in flight, the twin model's delta
    (metrics not yet where the last command wanted them) and liveness. ``data-asset`` lets
    ``static/console.js`` apply the ``asset.state`` feed events to the tile in place;
    ``data-silent-at`` is when it turns silent if nothing more arrives. Built in Python: an
    overview of a thousand assets renders a thousand of these."""
    kind = state.state
    words = label(kind) + (f": {label(state.worst_severity).lower()}" if kind == "anomalous"
                           else "")
    classes = f"tile {kind}" + (f" sev-{state.worst_severity}" if state.worst_severity else "")
    silent_at = state.silent_at.isoformat() if state.silent_at else ""
    delta = ",".join(f"{d['metric']}:{d['status']}" for d in state.delta)
    attrs = format_html(' data-asset="{}" data-liveness="{}" data-silent-at="{}" '
                        'data-received="{}" data-delta="{}"', state.asset.pk, state.liveness,
                        silent_at, state.twin_state.get("last_received_at") or "", delta)
    body = format_html(
        '<span class="tile-name">{}</span><span class="tile-state">'
        '<span class="state-icon" aria-hidden="true">{}</span> '
        '<span class="state-text">{}</span></span>', state.asset.name, ICONS[kind], words)
    lines = mark_safe("".join(_tile_lines(state)))  # each line escaped by format_html
    return format_html('<li class="{}" data-state="{}"{}><a href="{}">{}{}</a></li>',
                       classes, kind, attrs, href, body, lines)
