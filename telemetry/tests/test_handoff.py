"""``telemetry.handoff``: the one upward hand-off goes by Celery task name, and resolves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from telemetry import handoff

ROOT = Path(__file__).resolve().parents[2]


def test_the_policy_tasks_resolve_by_name_in_a_process_that_never_imported_policy():
    """A web or ingest process has not imported ``policy.tasks``: the hand-off still finds
    both tasks (autodiscovery on demand), without telemetry importing policy."""
    code = ("import django, sys; django.setup(); from celery import current_app; "
            "from telemetry import handoff; "
            "assert 'policy.tasks' not in sys.modules; "
            "print(sorted(handoff.policy_task(s).name for s in handoff.POLICY_TASKS))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "opstwin_site.settings",
                                 "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(sorted(handoff.POLICY_TASKS.values()))


def test_a_diverted_stage_collects_ids_or_calls_the_sink(monkeypatch):
    calls, seen = [], []
    monkeypatch.setitem(handoff.DIVERTED, handoff.RESPOND, calls)
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, seen.append)
    handoff.send(handoff.RESPOND, [3, 4])
    handoff.send(handoff.DETECT, [7])
    assert calls == [3, 4] and seen == [[7]]


def test_an_unknown_stage_is_a_programming_error():
    with pytest.raises(KeyError):
        handoff.send("deploy", [1])
