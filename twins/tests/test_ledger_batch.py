"""``twins.ledger.record_changes``: many changes under one lock acquisition, same contract as
``record_change`` (chained in order, gap-free feed ids in commit order, announced once)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from twins.audit_chain import verify_chain
from twins.feed import change_committed
from twins.ledger import audit_key, entry_mac, record_change, record_changes
from twins.models import AuditEntry, ChangeEvent, Twin


def change(twin, n: int, **extra) -> dict:
    return {"actor": "tester", "action": "twin.touch", "resource_type": "twin",
            "resource_id": twin.pk if twin else n, "operation": "updated", "twin": twin,
            "after": {"n": n}} | extra


@pytest.mark.django_db
def test_a_batch_appends_entries_and_events_in_list_order(plant):
    other = Twin.objects.create(slug="other", name="Other")
    items = [change(plant, 0),
             change(other, 1, before={"n": 0}, reason="it's \\ \"quoted\" ü \u2028"),
             change(None, 2, after=None, operation="deleted", resource_type="thing"),
             change(plant, 3, actor=None)]
    with transaction.atomic():
        events = record_changes(items)
    assert [e.id for e in events] == list(range(events[0].id, events[0].id + 4))
    stored = list(ChangeEvent.objects.filter(id__in=[e.id for e in events]).order_by("id"))
    for returned, row in zip(events, stored, strict=True):
        assert (returned.type, returned.resource_type, returned.resource_id, returned.operation,
                returned.twin_id, returned.actor, returned.data, returned.created_at) == (
                row.type, row.resource_type, row.resource_id, row.operation, row.twin_id,
                row.actor, row.data, row.created_at)
    assert [(e.type, e.twin_id, e.actor, e.data) for e in stored] == [
        ("twin.updated", plant.pk, "tester", {"n": 0}),
        ("twin.updated", other.pk, "tester", {"n": 1}),
        ("thing.deleted", None, "tester", {"id": "2"}),
        ("twin.updated", plant.pk, "system", {"n": 3})]
    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert [(e.twin_slug, e.before, e.after, e.reason) for e in entries] == [
        ("plant", None, {"n": 0}, ""),
        ("other", {"n": 0}, {"n": 1}, "it's \\ \"quoted\" ü \u2028"),
        ("", None, None, ""),
        ("plant", None, {"n": 3}, "")]
    key, key_id = audit_key()
    for previous, entry in zip([None, *entries], entries, strict=False):
        assert entry.key_id == key_id
        assert entry.hash == entry_mac(entry, key)  # the sealed fields are what was stored
        if previous is not None:
            assert entry.prev_hash == previous.hash
    assert verify_chain().ok


@pytest.mark.django_db
def test_a_batch_continues_the_chain_of_single_changes(plant):
    with transaction.atomic():
        record_change(**change(plant, 0))
        record_changes([change(plant, n) for n in (1, 2, 3)])
        record_change(**change(plant, 4))
    assert list(AuditEntry.objects.order_by("seq").values_list("after__n", flat=True)) == [
        0, 1, 2, 3, 4]
    report = verify_chain()
    assert report.ok and report.tip_seq == 5


@pytest.mark.django_db
def test_an_empty_batch_is_a_no_op(plant, django_assert_num_queries):
    with transaction.atomic(), django_assert_num_queries(0):
        assert record_changes([]) == []
    assert not AuditEntry.objects.exists() and not ChangeEvent.objects.exists()


@pytest.mark.django_db
def test_an_item_with_an_unknown_key_is_refused_before_anything_is_written(plant):
    with transaction.atomic(), pytest.raises(TypeError):
        record_changes([change(plant, 0), change(plant, 1, colour="red")])
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_outside_a_transaction_is_refused(plant):
    with pytest.raises(transaction.TransactionManagementError):
        record_changes([change(plant, 0)])
    with pytest.raises(transaction.TransactionManagementError):
        record_changes([])
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_committed_batch_is_announced_once_with_its_last_id(plant):
    heard = []

    def receiver(sender, event_id, **_kwargs):
        heard.append(event_id)

    change_committed.connect(receiver, dispatch_uid="test_ledger_batch")
    try:
        with transaction.atomic():
            events = record_changes([change(plant, n) for n in range(5)])
            assert heard == []  # nothing before the commit
        assert heard == [events[-1].id]
        with transaction.atomic():
            record_changes([change(plant, n) for n in range(3)])
            transaction.set_rollback(True)
        assert heard == [events[-1].id]  # a rolled-back batch is not announced
    finally:
        change_committed.disconnect(dispatch_uid="test_ledger_batch")


@pytest.mark.django_db(transaction=True)
def test_batches_interleaved_with_single_writes_keep_the_chain_and_a_gap_free_feed(plant):
    """GIVEN one connection committing batches of 5 and two others committing single changes,
    each holding its transaction open a moment after appending (so commits queue on the
    sequencing lock), WHEN a reader follows the feed (``id > cursor``) all along, THEN it sees
    every event exactly once in id order, each batch has consecutive ids and seq numbers in
    its list order, and the chain verifies."""
    done, seen, errors, batches = threading.Event(), [], [], []

    def batch_writer():
        try:
            for b in range(8):
                with transaction.atomic():
                    events = record_changes([change(plant, 1000 * b + i) for i in range(5)])
                    time.sleep(0.003)
                batches.append([e.id for e in events])
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    def single_writer(base: int):
        try:
            for n in range(20):
                with transaction.atomic():
                    record_change(**change(plant, base + n))
                    time.sleep(0.002)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    def reader():
        cursor = 0
        try:
            while True:
                finished = done.is_set()
                page = list(ChangeEvent.objects.filter(id__gt=cursor).order_by("id")
                            .values_list("id", flat=True)[:7])
                seen.extend(page)
                cursor = page[-1] if page else cursor
                if finished and not page:
                    return
        finally:
            connection.close()

    follower = threading.Thread(target=reader)
    writers = [threading.Thread(target=batch_writer),
               threading.Thread(target=single_writer, args=(100_000,)),
               threading.Thread(target=single_writer, args=(200_000,))]
    follower.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    done.set()
    follower.join(timeout=60)
    assert errors == []
    assert len(seen) == 8 * 5 + 2 * 20
    assert seen == sorted(set(seen))
    assert seen == list(ChangeEvent.objects.order_by("id").values_list("id", flat=True))
    by_event = {e.data["n"]: e.id for e in ChangeEvent.objects.all()}
    seq_of = {e.after["n"]: e.seq for e in AuditEntry.objects.all()}
    for b, ids in enumerate(batches):
        assert ids == list(range(ids[0], ids[0] + 5))
        assert [by_event[1000 * b + i] for i in range(5)] == ids
        first = seq_of[1000 * b]
        assert [seq_of[1000 * b + i] for i in range(5)] == list(range(first, first + 5))
    report = verify_chain()
    assert report.ok and report.entries == 80 and report.tip_seq == 80


@pytest.mark.django_db
def test_numbers_jsonb_rewrites_are_hashed_as_stored(plant):
    """GIVEN states with numbers PostgreSQL's jsonb stores differently from Python's JSON
    (1e+16, -0.0 as a rounded small negative gives, 1.2345678901234567e+20), WHEN they are
    recorded and read back, THEN every entry still verifies: the chain hashes what is stored."""
    state = {"big": 1e16, "zero": round(-0.00001, 4), "huge": 1.2345678901234567e20,
             "small": 1e-05, "plain": 1.5, "n": 3}
    with transaction.atomic():
        record_change(actor="tester", action="twin.touch", resource_type="twin",
                      resource_id=plant.pk, operation="updated", twin=plant, after=state,
                      before={"contributions": {"Pressure": -0.0}})
        record_changes([change(plant, 1, after=state)])
    key, _ = audit_key()
    for entry in AuditEntry.objects.order_by("seq"):
        assert entry.hash == entry_mac(entry, key), entry.after
    assert AuditEntry.objects.get(seq=1).after == {
        "big": 10000000000000000, "zero": 0.0, "huge": 123456789012345670000, "small": 1e-05,
        "plain": 1.5, "n": 3}
    assert verify_chain().ok


@pytest.mark.django_db
def test_the_statements_under_the_lock_run_as_prepared_plans(plant, settings):
    """With DB_PREPARED_STATEMENTS the lock prelude, the tip read and the INSERT are
    server-side prepared statements, so the sequencing lock is not held while PostgreSQL
    parses and plans them; a batch of another size is a statement of its own, the chain stays
    whole, and Django's own queries stay unprepared."""
    settings.DB_PREPARED_STATEMENTS = True
    for n in range(6):
        with transaction.atomic():
            record_change(**change(plant, n))
    with transaction.atomic():
        record_changes([change(plant, 10 + n) for n in range(3)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any(s.startswith('SELECT seq, hash FROM "policy_auditentry"') for s in prepared)
    assert any("pg_advisory_xact_lock" in s for s in prepared)
    assert any(s.startswith('WITH entries AS (INSERT INTO "policy_auditentry"')
               and s.count("::jsonb") == 3 for s in prepared)  # 1 entry (2) + 1 event (1)
    assert connection.connection.prepare_threshold is None  # Django's setting, restored
    report = verify_chain()
    assert report.broken is None and report.entries == 9


@pytest.mark.django_db
def test_the_ledgers_database_errors_are_djangos(plant):
    """A pending foreign-key violation fires at the ledger's ``SET CONSTRAINTS ALL
    IMMEDIATE``; it reaches the caller as Django's IntegrityError (which the API answers as a
    409), not as a bare psycopg error."""
    with pytest.raises(IntegrityError), transaction.atomic():
        ChangeEvent.objects.create(type="twin.updated", resource_type="twin", resource_id="x",
                                   operation="updated", twin_id=2_000_000_000, actor="t",
                                   data={}, created_at=timezone.now())
        record_change(**change(plant, 1))
    assert not AuditEntry.objects.exists()
