"""The audit lock never deadlocks with a transaction that holds a row lock and waits for it."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from twins.ledger import record_change
from twins.models import AuditEntry, Twin

pytestmark = pytest.mark.django_db(transaction=True)


def blocked_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row) and row[0] == "Lock"


def touch(twin, actor: str) -> None:
    record_change(actor=actor, action="twin.touch", resource_type="twin", resource_id=twin.pk,
                  operation="updated", twin=twin, after={"by": actor})


def test_a_row_lock_holder_waiting_for_the_audit_lock_does_not_deadlock(twin):
    """GIVEN transaction A holding the twin row FOR UPDATE (as detection does), WHEN B records
    a change on that twin and A then records one too, THEN both commit (B waits for the row
    before it takes the audit lock) instead of PostgreSQL aborting one as a deadlock."""
    a_locked, b_pid, errors = threading.Event(), [], []

    def writer_b():
        try:
            a_locked.wait()
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                b_pid.append(cursor.fetchone()[0])
            with transaction.atomic():
                touch(twin, "b")
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=writer_b)
    thread.start()
    try:
        with transaction.atomic():
            Twin.objects.select_for_update().get(pk=twin.pk)
            a_locked.set()
            deadline = time.monotonic() + 10
            while not (b_pid and blocked_on_a_lock(b_pid[0])) and time.monotonic() < deadline:
                time.sleep(0.02)
            touch(twin, "a")
    finally:
        thread.join(timeout=20)
    assert errors == []
    assert list(AuditEntry.objects.order_by("seq").values_list("actor", flat=True)) == ["a", "b"]
