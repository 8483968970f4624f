"""Issue 10, item 7: the audit chain cannot be rewritten after its newest anchor.

Seen: entries after the newest anchor were rewritten with TRUNCATE + INSERT (no trigger
disabled) and ``verify_audit`` still passed, because row triggers never fire on TRUNCATE and the
chain's plain SHA-256 hashes can be recomputed by anyone. Now TRUNCATE is refused by a
statement-level trigger, and entries are HMAC-SHA256 under ``AUDIT_HMAC_KEY``, which the
database does not hold; entries from before migration 0005 keep their SHA-256 hashes and verify.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from policy.models import PolicyDocument
from twins.audit_chain import verify_chain, write_anchor
from twins.ledger import GENESIS_HASH, audit_key, entry_hash, entry_mac, key_id_of, record_change
from twins.models import AuditAnchor, AuditEntry

APPEND_ONLY_TABLES = ("policy_auditentry", "policy_auditanchor", "policy_policydocument")


def touch(twin, k: int) -> None:
    with transaction.atomic():
        record_change(actor="tester", action="twin.touch", resource_type="twin",
                      resource_id=twin.pk, operation="updated", twin=twin,
                      after={"k": k}, reason=f"change {k}")


@pytest.fixture
def chain(db, twin):
    """Six audited changes, the newest anchor at seq 4 (beat anchors every 5 minutes)."""
    for k in range(4):
        touch(twin, k)
    write_anchor()
    for k in range(4, 6):
        touch(twin, k)
    return list(AuditEntry.objects.order_by("seq"))


@contextmanager
def as_table_owner():
    """The append-only row triggers switched off, as the table's owner could do."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE policy_auditentry DISABLE TRIGGER audit_append_only")
        yield cursor
        cursor.execute("ALTER TABLE policy_auditentry ENABLE TRIGGER audit_append_only")


def forged(template: AuditEntry, prev_hash: str, *, key_id: str = "",
           key: bytes | None = None) -> AuditEntry:
    """A copy of ``template`` with a new reason, linked to ``prev_hash``, hashed by the forger:
    plain SHA-256 (``entry_hash``) unless ``key`` is given (HMAC under the forger's key)."""
    entry = AuditEntry(**{f.attname: getattr(template, f.attname)
                          for f in AuditEntry._meta.concrete_fields if f.attname != "id"})
    entry.reason, entry.prev_hash, entry.key_id = "nothing happened", prev_hash, key_id
    entry.hash = entry_mac(entry, key) if key is not None else entry_hash(entry)
    return entry


def rewrite_tail(chain: list[AuditEntry], from_seq: int, **how) -> None:
    """Replace the entries from ``from_seq`` on with forged ones that link up correctly."""
    with as_table_owner() as cursor:
        cursor.execute("DELETE FROM policy_auditentry WHERE seq >= %s", [from_seq])
    prev = chain[from_seq - 2].hash if from_seq > 1 else GENESIS_HASH
    for original in chain[from_seq - 1:]:
        entry = forged(original, prev, **how)
        entry.save(force_insert=True)
        prev = entry.hash


def verify() -> str:
    with pytest.raises(CommandError) as caught:
        call_command("verify_audit")
    return str(caught.value)


# --- TRUNCATE ------------------------------------------------------------------------------

@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_truncate_is_refused_on_every_append_only_table(chain, table, trusted):
    """Raw SQL, real PostgreSQL; ``strict_truncate`` turns off the test-database exemption."""
    counts = (AuditEntry.objects.count(), AuditAnchor.objects.count(),
              PolicyDocument.objects.count())
    with pytest.raises(DatabaseError, match=f"{table} is append-only: TRUNCATE refused"), \
            transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL opstwin.strict_truncate = on")
        cursor.execute(f"TRUNCATE {table} CASCADE")
    assert (AuditEntry.objects.count(), AuditAnchor.objects.count(),
            PolicyDocument.objects.count()) == counts


def test_the_reported_truncate_and_insert_rewrite_is_refused(chain):
    """The review's attack, without disabling any trigger: TRUNCATE, then INSERT a new tail."""
    with pytest.raises(DatabaseError, match="TRUNCATE refused"), transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute("SET LOCAL opstwin.strict_truncate = on")
        cursor.execute("TRUNCATE policy_auditentry")
        for entry in chain:  # never reached
            forged(entry, entry.prev_hash).save(force_insert=True)
    assert list(AuditEntry.objects.order_by("seq")) == chain
    assert verify_chain().ok


# --- rewriting the tail after the newest anchor ----------------------------------------------

def test_a_tail_rewritten_with_recomputed_sha256_hashes_is_detected(chain):
    """The attacker can recompute plain SHA-256 but not the HMAC: the tail is a downgrade."""
    assert AuditAnchor.objects.get().seq == 4
    rewrite_tail(chain, 5)
    assert AuditEntry.objects.get(seq=6).prev_hash == AuditEntry.objects.get(seq=5).hash
    assert verify() == ("audit chain BROKEN at seq 5: downgraded: seq 5 carries an unkeyed "
                        "SHA-256 hash after keyed entries (written without the HMAC key)")


def test_a_tail_rewritten_under_the_servers_key_id_without_the_key_is_tampered(chain):
    rewrite_tail(chain, 5, key_id=chain[0].key_id, key=b"guessed" * 8)
    assert "BROKEN at seq 5: tampered" in verify()


def test_a_tail_rewritten_under_the_forgers_own_key_is_an_unknown_key(chain):
    own = b"attacker's key" * 3
    rewrite_tail(chain, 5, key_id=key_id_of(own), key=own)
    assert "BROKEN at seq 5: unknown_key" in verify()


def test_a_whole_chain_rewritten_with_sha256_hashes_is_unsealed(chain):
    """Rewriting from seq 1 leaves no keyed entry: unkeyed entries are trusted only when a
    keyed entry follows them. (The anchor at seq 4 would also catch this one.)"""
    rewrite_tail(chain, 1)
    report = verify_chain()
    assert report.broken.kind == "unsealed"
    assert report.broken.seq == 1
    assert "seq 1..6 carry unkeyed SHA-256 hashes" in report.broken.detail


def test_sha256_entries_appended_after_the_keyed_tip_are_detected(chain):
    """INSERT is allowed (append-only), but an appended entry cannot carry a valid HMAC."""
    extra = forged(chain[-1], chain[-1].hash)
    extra.seq = 7
    extra.hash = entry_hash(extra)
    extra.save(force_insert=True)
    assert "BROKEN at seq 7: downgraded" in verify()


def test_an_attacker_with_the_key_is_still_caught_by_the_anchor_up_to_its_seq(chain):
    key, key_id = audit_key()
    rewrite_tail(chain, 3, key_id=key_id, key=key)
    assert "BROKEN at seq 4: anchor_mismatch" in verify()


def test_an_attacker_with_the_key_can_rewrite_after_the_newest_anchor(chain):
    """The documented limit: with the secret, the entries after the newest anchor can be
    rewritten undetectably; keeping the key off the database host is the defence."""
    key, key_id = audit_key()
    rewrite_tail(chain, 5, key_id=key_id, key=key)
    assert verify_chain().ok


# --- keys ----------------------------------------------------------------------------------

def test_a_key_mismatch_is_detected(chain, settings):
    settings.AUDIT_HMAC_KEY = "another-server-another-key-" + "x" * 16
    message = verify()
    assert message.startswith("audit chain BROKEN at seq 1: unknown_key: seq 1 is keyed with ")
    assert f"this server holds key {key_id_of(settings.AUDIT_HMAC_KEY.encode())!r}" in message


def test_a_tampered_keyed_entry_with_its_key_id_kept_is_tampered(chain):
    with as_table_owner() as cursor:
        cursor.execute("UPDATE policy_auditentry SET reason = 'x' WHERE seq = 5")
    assert "BROKEN at seq 5: tampered" in verify()


def test_the_report_names_the_scheme_of_each_span(chain, capsys):
    call_command("verify_audit")
    out = capsys.readouterr().out
    assert f"seq 1..6: hmac-sha256 key {audit_key()[1]}" in out
    assert "audit chain OK: 6 entries" in out


def test_the_key_id_does_not_reveal_the_key():
    key = b"k" * 32
    assert key_id_of(key) != key_id_of(b"k" * 31 + b"l")
    assert len(key_id_of(key)) == 16 and key.hex()[:16] != key_id_of(key)


# --- migrating an existing chain -------------------------------------------------------------

def insert_legacy_chain(n: int) -> list[str]:
    """``n`` audit.v1 entries (plain SHA-256) inserted as a pre-0005 server wrote them."""
    hashes, prev = [], GENESIS_HASH
    with connection.cursor() as cursor:
        for seq in range(1, n + 1):
            entry = AuditEntry(
                seq=seq, at=timezone.now(), actor="old-server", role="system", action="twin.touch",
                resource_type="twin", resource_id="1", twin_slug="", before=None,
                after={"k": seq}, reason=f"before the upgrade {seq}", request_id="",
                client_address="", prev_hash=prev)
            entry.hash = prev = entry_hash(entry)
            cursor.execute(
                "INSERT INTO policy_auditentry (seq, at, actor, role, action, resource_type, "
                "resource_id, twin_slug, before, after, reason, request_id, client_address, "
                "prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, %s::jsonb, %s, "
                "%s, %s, %s, %s)",
                [entry.seq, entry.at, entry.actor, entry.role, entry.action, entry.resource_type,
                 entry.resource_id, entry.twin_slug, json.dumps(entry.after), entry.reason,
                 entry.request_id, entry.client_address, entry.prev_hash, entry.hash])
            hashes.append(entry.hash)
    return hashes


@pytest.mark.django_db(transaction=True)
def test_old_sha256_entries_still_verify_after_the_migration_which_seals_them(twin):
    call_command("migrate", "policy", "0004_append_only_documents_and_anchors", verbosity=0)
    try:
        hashes = insert_legacy_chain(3)
    finally:
        call_command("migrate", verbosity=0)  # every app: twins 0003+ was unapplied too
    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.hash for e in entries[:3]] == hashes
    assert [e.key_id for e in entries[:3]] == ["", "", ""]
    seal = entries[3]
    assert (seal.seq, seal.action, seal.prev_hash, seal.key_id) == (
        4, "audit.keyed", hashes[-1], audit_key()[1])
    touch(twin, 1)
    report = verify_chain()
    assert report.ok, report.broken
    assert [str(s) for s in report.spans] == [
        "seq 1..3: sha256 (unkeyed)", f"seq 4..5: hmac-sha256 key {audit_key()[1]}"]

    # After the upgrade, a rewrite of the old prefix still breaks the keyed seal's link.
    with as_table_owner() as cursor:
        cursor.execute("UPDATE policy_auditentry SET reason = 'x' WHERE seq = 2")
    assert verify_chain().broken.kind == "tampered"


@pytest.mark.django_db(transaction=True)
def test_an_upgraded_chain_whose_seal_is_rewritten_away_is_unsealed():
    call_command("migrate", "policy", "0004_append_only_documents_and_anchors", verbosity=0)
    try:
        insert_legacy_chain(3)
    finally:
        call_command("migrate", verbosity=0)  # every app: twins 0003+ was unapplied too
    with as_table_owner() as cursor:
        cursor.execute("DELETE FROM policy_auditentry WHERE seq = 4")
    report = verify_chain()
    assert (report.broken.kind, report.broken.seq) == ("unsealed", 1)


# --- configuration ---------------------------------------------------------------------------

def settings_in_subprocess(tmp_path, **env) -> tuple[int, str]:
    """Load the settings in a fresh interpreter with ``env``; (exit code, output)."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_HMAC_KEY")}
    # A database URL that is never dialled: without one the settings would start an embedded
    # PostgreSQL in tmp_path that outlives the subprocess.
    base |= {"OPSTWIN_DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": "s" * 50,
             "DATABASE_URL": "postgres://postgres@127.0.0.1:1/settings-only",
             "DJANGO_SETTINGS_MODULE": "opstwin_site.settings"} | env
    code = ("import django; django.setup(); from twins.ledger import audit_key; "
            "print(audit_key()[1])")
    done = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_the_key_is_required_in_production_and_read_from_a_file(tmp_path):
    rc, out = settings_in_subprocess(tmp_path, OPSTWIN_PRODUCTION="1")
    assert rc != 0 and "AUDIT_HMAC_KEY (or AUDIT_HMAC_KEY_FILE) must be set in production" in out
    key_file = tmp_path / "audit.key"
    key_file.write_text("a" * 40 + "\n")
    rc, out = settings_in_subprocess(tmp_path, OPSTWIN_PRODUCTION="1",
                                     AUDIT_HMAC_KEY_FILE=str(key_file),
                                     ALLOWED_HOSTS="opstwin.example")
    assert (rc, out.strip()) == (0, key_id_of(b"a" * 40)), out
    assert not (tmp_path / "data" / "audit_hmac_key").exists()


def test_outside_production_a_per_checkout_key_file_is_made_once(tmp_path):
    rc, first = settings_in_subprocess(tmp_path)
    key_file = tmp_path / "data" / "audit_hmac_key"
    assert rc == 0, first
    assert key_file.stat().st_mode & 0o077 == 0
    assert first.strip() == key_id_of(key_file.read_text().strip().encode())
    assert settings_in_subprocess(tmp_path) == (0, first)
