"""The audit chain: append-only in the database, and ``verify_audit`` finds the first break
for a tampered field, a deleted entry, a reordered pair, a rewritten link and truncation."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from twins.audit_chain import verify_chain, write_anchor
from twins.ledger import audit_key, entry_mac, record_change
from twins.models import AuditAnchor, AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(twin):
    """Six audited changes."""
    for k in range(6):
        with transaction.atomic():
            record_change(actor="tester", action="twin.touch", resource_type="twin",
                          resource_id=twin.pk, operation="updated", twin=twin,
                          after={"k": k}, reason=f"change {k}")
    return list(AuditEntry.objects.order_by("seq"))


@contextmanager
def tampering(table: str = "policy_auditentry", trigger: str = "audit_append_only"):
    """Switch the append-only trigger off, as an attacker with table rights could."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
        yield cursor
        cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")


def verify() -> str:
    with pytest.raises(CommandError) as caught:
        call_command("verify_audit")
    return str(caught.value)


def test_an_intact_chain_verifies(chain, capsys):
    call_command("verify_audit", "--anchor")
    out = capsys.readouterr().out
    assert "audit chain OK: 6 entries, tip seq 6" in out
    assert "anchored seq 6" in out
    assert AuditAnchor.objects.get().hash == chain[-1].hash


def test_every_audit_entry_links_to_the_one_before(chain):
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5, 6]
    for previous, entry in zip(chain, chain[1:], strict=False):
        assert entry.prev_hash == previous.hash
        assert entry.hash == entry_mac(entry, audit_key()[0])
        assert entry.key_id == audit_key()[1]


def test_a_tampered_field_is_reported_at_its_entry(chain):
    with tampering() as cursor:
        cursor.execute("UPDATE policy_auditentry SET reason = 'nothing happened' WHERE seq = 3")
    assert verify() == "audit chain BROKEN at seq 3: tampered: seq 3: stored hash does not " \
                       "match its fields"


def test_a_tampered_json_value_is_reported(chain):
    with tampering() as cursor:
        cursor.execute("""UPDATE policy_auditentry SET after = '{"k": 99}' WHERE seq = 5""")
    assert "BROKEN at seq 5: tampered" in verify()


def test_a_deleted_entry_is_reported(chain):
    with tampering() as cursor:
        cursor.execute("DELETE FROM policy_auditentry WHERE seq = 3")
    assert "BROKEN at seq 3: deleted: seq 3..3 missing" in verify()


def test_a_reordered_pair_is_reported(chain):
    with tampering() as cursor:
        cursor.execute("UPDATE policy_auditentry SET seq = -1 WHERE seq = 3")
        cursor.execute("UPDATE policy_auditentry SET seq = 3 WHERE seq = 4")
        cursor.execute("UPDATE policy_auditentry SET seq = 4 WHERE seq = -1")
    assert "BROKEN at seq 3: reordered" in verify()


def test_a_rewritten_entry_with_a_recomputed_hash_breaks_the_next_link(chain):
    """Even an attacker holding the HMAC key cannot rewrite one entry in the middle."""
    entry = chain[2]
    entry.reason = "rewritten"
    with tampering() as cursor:
        cursor.execute("UPDATE policy_auditentry SET reason = %s, hash = %s WHERE seq = 3",
                       [entry.reason, entry_mac(entry, audit_key()[0])])
    assert "BROKEN at seq 4: relinked" in verify()


def test_truncation_is_caught_by_the_anchor(chain):
    write_anchor()
    with tampering() as cursor:
        cursor.execute("DELETE FROM policy_auditentry WHERE seq >= 5")
    assert "BROKEN at seq 5: truncated: anchor (table) records seq 6, the chain ends at 4" in \
        verify()


def test_truncation_is_caught_by_the_anchor_file_when_the_table_is_wiped_too(chain, settings):
    write_anchor()
    with tampering("policy_auditanchor", "auditanchor_append_only") as cursor:
        cursor.execute("DELETE FROM policy_auditanchor")
    with tampering() as cursor:
        cursor.execute("DELETE FROM policy_auditentry WHERE seq >= 4")
    message = verify()
    assert "BROKEN at seq 4: truncated" in message
    assert settings.POLICY_AUDIT_ANCHOR_FILE in message


def test_anchors_of_another_database_are_ignored(chain, settings):
    with open(settings.POLICY_AUDIT_ANCHOR_FILE, "w") as fh:
        fh.write(json.dumps({"db": "other:1", "seq": 99, "hash": "x"}) + "\n")
    assert verify_chain().ok is True


def test_a_rewritten_tip_is_caught_by_the_anchor(chain):
    """Even with the HMAC key, a rewritten anchored tip differs from its anchor."""
    write_anchor()
    tip = chain[-1]
    tip.reason = "rewritten"
    with tampering() as cursor:
        cursor.execute("UPDATE policy_auditentry SET reason = %s, hash = %s WHERE seq = 6",
                       [tip.reason, entry_mac(tip, audit_key()[0])])
    assert "BROKEN at seq 6: anchor_mismatch" in verify()


def test_the_database_refuses_to_alter_the_audit_chain_or_its_anchors(chain):
    write_anchor()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.update(reason="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.all().delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditAnchor.objects.all().delete()
    assert AuditEntry.objects.filter(reason="rewritten").count() == 0
    assert AuditAnchor.objects.count() == 1

