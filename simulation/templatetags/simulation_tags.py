"""Template helpers of the simulation pages: a WhatIfModel's fit report as table rows (asset
page), and a run's progress in words."""

from __future__ import annotations

from django import template

from simulation.models import WhatIfModel

register = template.Library()


@register.simple_tag
def whatif_metric_rows(model: WhatIfModel) -> list[dict]:
    """One row per fitted metric: ``metric``, ``unit``, ``r2`` (None for a constant metric),
    ``resid_std`` (metric unit), ``slopes`` [(driver, slope, stderr)], ``uses_drivers``,
    ``band`` [low, high] (metric unit), the report's plain-language ``note`` and, for a generic
    model, ``coverage_90`` (0..1: the share of next readings its 90 % interval covered in
    training)."""
    report = model.fit_report.get("metrics", {})
    return [{
        "metric": metric, "unit": model.asset.unit_of(metric), "r2": fit.get("r2"),
        "resid_std": fit.get("resid_std"), "uses_drivers": fit.get("uses_drivers"),
        "slopes": [(d, s, fit.get("slope_stderr", {}).get(d))
                   for d, s in fit.get("slopes", {}).items()],
        "band": model.bands.get(metric), "note": fit.get("note", ""),
        "coverage_90": fit.get("coverage_90"),
    } for metric, fit in report.items()]


@register.simple_tag
def whatif_driver_rows(model: WhatIfModel) -> list[dict]:
    """One row per driver: ``name``, ``unit`` and its training ``mean``/``std``/``min``/``max``
    and ``constant`` flag (the range outside which what-if actions extrapolate)."""
    drivers = model.fit_report.get("drivers", {})
    return [{"name": name, "unit": model.asset.unit_of(name), **stats}
            for name, stats in drivers.items()]


def progress_unit(run) -> str:
    """What a run counts: ``shots`` on the quantum engine, ``samples`` otherwise."""
    return "shots" if run.engine == "quantum_iae" else "samples"


@register.filter
def progress_text(run) -> str:
    """A run's progress in words, e.g. ``42 % (4,200 / 10,000 samples)``: the percentage
    rounded down (100 % only when done), then samples done of the current target. The same
    text ``static/simulation_live.js`` writes from ``simulation.progress`` events."""
    percent = int(min(max(run.progress or 0.0, 0.0), 1.0) * 100)
    return (f"{percent} % ({run.samples_done:,} / {run.samples_target:,} "
            f"{progress_unit(run)})")


register.filter("progress_unit", progress_unit)
