"""Checking the audit chain end to end, and anchoring its tip against truncation.

``verify_chain`` walks the entries in ``seq`` order and stops at the first break:

- ``deleted``: a gap in ``seq`` (an entry was removed from the middle);
- ``reordered``: ``prev_hash`` names an entry that exists but is not the previous one;
- ``relinked``: ``prev_hash`` names no stored entry (the previous entry was rewritten);
- ``tampered``: the stored hash (or HMAC) does not match the entry's fields (``twins.ledger``);
- ``unknown_key``: the entry claims an HMAC key this server does not hold (key mismatch: the
  server runs with another ``AUDIT_HMAC_KEY``, or the entry was forged with a made-up key id);
- ``downgraded``: an unkeyed SHA-256 entry follows a keyed one (written without the key);
- ``unsealed``: the chain ends in unkeyed SHA-256 entries that no keyed entry follows. Unkeyed
  entries are trusted only as the prefix that a keyed entry links to (migration 0005 seals an
  upgraded chain at once), so a tail rewritten with recomputed plain SHA-256 hashes by someone
  without the key is reported here or as ``downgraded``;
- ``truncated``: an anchor records a later ``seq`` than the chain's last entry;
- ``anchor_mismatch``: the entry at an anchored ``seq`` has another hash than anchored.

The report lists the spans of the chain and the scheme of each (``sha256`` = audit.v1,
``hmac-sha256`` with its key id = audit.v2), up to the first break.

Anchors (``AuditAnchor`` rows, append-only, and lines of ``POLICY_AUDIT_ANCHOR_FILE``) copy the
tip's seq and hash; the file lines also name the database (name and oid), so a recreated or
other database never reads another one's anchors.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from twins.ledger import (
    AUDIT_LOCK_KEY,
    GENESIS_HASH,
    LEGACY_KEY_ID,
    audit_key,
    entry_hash,
    entry_mac,
)
from twins.models import AuditAnchor, AuditEntry


@dataclass(frozen=True)
class Break:
    """The first broken entry: its ``seq``, the ``kind`` of break and a sentence."""

    seq: int
    kind: str
    detail: str


@dataclass(frozen=True)
class Span:
    """Consecutive entries ``first_seq..last_seq`` verified under one scheme (and key id)."""

    scheme: str  # "sha256" (audit.v1, unkeyed) or "hmac-sha256" (audit.v2)
    key_id: str  # "" for sha256
    first_seq: int
    last_seq: int

    def __str__(self) -> str:
        key = f" key {self.key_id}" if self.key_id else " (unkeyed)"
        return f"seq {self.first_seq}..{self.last_seq}: {self.scheme}{key}"


@dataclass(frozen=True)
class ChainReport:
    """Outcome of ``verify_chain``: entries checked, the tip, the anchor used, the break, and
    the verified spans with their schemes (up to the break)."""

    entries: int
    tip_seq: int
    tip_hash: str
    anchor: dict | None
    broken: Break | None
    spans: tuple[Span, ...] = ()

    @property
    def ok(self) -> bool:
        return self.broken is None


def database_identity() -> str:
    """``name:oid`` of the current database (a recreated database gets a new oid)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), oid FROM pg_database "
                       "WHERE datname = current_database()")
        name, oid = cursor.fetchone()
    return f"{name}:{oid}"


def _anchor_file() -> Path | None:
    path = getattr(settings, "POLICY_AUDIT_ANCHOR_FILE", "")
    return Path(path) if path else None


def write_anchor() -> AuditAnchor | None:
    """Copy the chain's tip to an AuditAnchor row and the anchor file; None if empty.

    Takes the audit lock so the tip cannot move while it is read.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
        tip = AuditEntry.objects.order_by("-seq").values("seq", "hash").first()
        if tip is None:
            return None
        anchor = AuditAnchor.objects.create(seq=tip["seq"], hash=tip["hash"], at=timezone.now())
    path = _anchor_file()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"db": database_identity(), "seq": anchor.seq,
                                 "hash": anchor.hash, "at": anchor.at.isoformat()}) + "\n")
    return anchor


def _file_anchor() -> dict | None:
    path = _anchor_file()
    if path is None or not path.exists():
        return None
    ident, best = database_identity(), None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("db") == ident and (best is None or record["seq"] > best["seq"]):
            best = record | {"source": str(path)}
    return best


def latest_anchor() -> dict | None:
    """The anchor with the highest seq from the table or the file (None if none)."""
    row = AuditAnchor.objects.order_by("-seq").values("seq", "hash", "at").first()
    candidates = [a for a in (row and row | {"source": "table"}, _file_anchor()) if a]
    return max(candidates, key=lambda a: a["seq"]) if candidates else None


def _link_break(entry: AuditEntry, expected_prev: str, lookahead: str | None) -> Break:
    exists = entry.prev_hash == lookahead or AuditEntry.objects.filter(
        hash=entry.prev_hash).exists()
    if exists:
        return Break(entry.seq, "reordered", f"seq {entry.seq} links to an entry that is not "
                                             f"seq {entry.seq - 1} (entries swapped)")
    return Break(entry.seq, "relinked", f"seq {entry.seq} links to {entry.prev_hash[:12]}…, "
                                        f"which no entry has (seq {entry.seq - 1} rewritten "
                                        f"or removed; expected {expected_prev[:12]}…)")


def _entry_break(entry: AuditEntry, key: bytes, key_id: str, keyed_seen: bool) -> Break | None:
    """Check ``entry.hash`` under the scheme its ``key_id`` names (link and seq already ok)."""
    if entry.key_id == LEGACY_KEY_ID:
        if keyed_seen:
            return Break(entry.seq, "downgraded", f"seq {entry.seq} carries an unkeyed SHA-256 "
                                                  "hash after keyed entries (written without "
                                                  "the HMAC key)")
        valid = hmac.compare_digest(entry_hash(entry), entry.hash)
    elif entry.key_id != key_id:
        return Break(entry.seq, "unknown_key", f"seq {entry.seq} is keyed with {entry.key_id!r}, "
                                               f"this server holds key {key_id!r} (key mismatch "
                                               "or forged)")
    else:
        valid = hmac.compare_digest(entry_mac(entry, key), entry.hash)
    if not valid:
        return Break(entry.seq, "tampered", f"seq {entry.seq}: stored hash does not match its "
                                            "fields")
    return None


def _walk(entries) -> tuple[int, int, str, Break | None, list[Span]]:
    key, key_id = audit_key()
    expected_seq, prev_hash, count, spans, keyed_seen = 1, GENESIS_HASH, 0, [], False

    def result(tip_seq: int, broken: Break | None):
        return count, tip_seq, prev_hash, broken, spans

    for entry, following in entries:
        count += 1
        if entry.seq != expected_seq:
            return result(expected_seq - 1, Break(
                expected_seq, "deleted", f"seq {expected_seq}..{entry.seq - 1} missing"))
        if entry.prev_hash != prev_hash:
            return result(entry.seq, _link_break(entry, prev_hash, following))
        broken = _entry_break(entry, key, key_id, keyed_seen)
        if broken is not None:
            return result(entry.seq, broken)
        keyed_seen = keyed_seen or entry.key_id != LEGACY_KEY_ID
        if spans and spans[-1].key_id == entry.key_id:
            spans[-1] = Span(spans[-1].scheme, entry.key_id, spans[-1].first_seq, entry.seq)
        else:
            scheme = "hmac-sha256" if entry.key_id != LEGACY_KEY_ID else "sha256"
            spans.append(Span(scheme, entry.key_id, entry.seq, entry.seq))
        expected_seq, prev_hash = expected_seq + 1, entry.hash
    if spans and spans[-1].key_id == LEGACY_KEY_ID:
        tail = spans[-1]
        return result(expected_seq - 1, Break(
            tail.first_seq, "unsealed", f"seq {tail.first_seq}..{tail.last_seq} carry unkeyed "
            "SHA-256 hashes and no keyed entry follows them (rewritten without the HMAC key, or "
            "a chain from before migration 0005 that was never sealed)"))
    return result(expected_seq - 1, None)


def _pairs():
    """(entry, hash of the next entry) in seq order, streamed."""
    previous = None
    for entry in AuditEntry.objects.order_by("seq").iterator(chunk_size=2000):
        if previous is not None:
            yield previous, entry.hash
        previous = entry
    if previous is not None:
        yield previous, None


def _anchor_break(anchor: dict | None, tip_seq: int) -> Break | None:
    if anchor is None:
        return None
    if anchor["seq"] > tip_seq:
        return Break(tip_seq + 1, "truncated", f"anchor ({anchor['source']}) records seq "
                                               f"{anchor['seq']}, the chain ends at {tip_seq}")
    stored = AuditEntry.objects.filter(seq=anchor["seq"]).values_list("hash", flat=True).first()
    if stored != anchor["hash"]:
        return Break(anchor["seq"], "anchor_mismatch", f"seq {anchor['seq']} differs from its "
                                                       f"anchor ({anchor['source']})")
    return None


def verify_chain() -> ChainReport:
    """Recompute the whole chain and compare it with the latest anchor (read-only).

    Keyed entries are checked with ``settings.AUDIT_HMAC_KEY`` (``ImproperlyConfigured`` if
    unset). Streams the entries (2000 per fetch), so memory does not grow with the chain.
    """
    count, tip_seq, tip_hash, broken, spans = _walk(_pairs())
    anchor = latest_anchor()
    if broken is None:
        broken = _anchor_break(anchor, tip_seq)
    return ChainReport(count, tip_seq, tip_hash, anchor, broken, tuple(spans))
