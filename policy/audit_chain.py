"""Checking the audit chain end to end, and anchoring its tip against truncation.

``verify_chain`` walks the entries in ``seq`` order and stops at the first break:

- ``deleted``: a gap in ``seq`` (an entry was removed from the middle);
- ``reordered``: ``prev_hash`` names an entry that exists but is not the previous one;
- ``relinked``: ``prev_hash`` names no stored entry (the previous entry was rewritten);
- ``tampered``: the stored hash does not match the entry's fields (``policy.audit``);
- ``truncated``: an anchor records a later ``seq`` than the chain's last entry;
- ``anchor_mismatch``: the entry at an anchored ``seq`` has another hash than anchored.

Anchors (``AuditAnchor`` rows, append-only, and lines of ``POLICY_AUDIT_ANCHOR_FILE``) copy the
tip's seq and hash; the file lines also name the database (name and oid), so a recreated or
other database never reads another one's anchors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from policy.audit import AUDIT_LOCK_KEY, GENESIS_HASH, entry_hash
from policy.models import AuditAnchor, AuditEntry


@dataclass(frozen=True)
class Break:
    """The first broken entry: its ``seq``, the ``kind`` of break and a sentence."""

    seq: int
    kind: str
    detail: str


@dataclass(frozen=True)
class ChainReport:
    """Outcome of ``verify_chain``: entries checked, the tip, the anchor used, the break."""

    entries: int
    tip_seq: int
    tip_hash: str
    anchor: dict | None
    broken: Break | None

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


def _walk(entries) -> tuple[int, int, str, Break | None]:
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    for entry, following in entries:
        count += 1
        if entry.seq != expected_seq:
            return count, expected_seq - 1, prev_hash, Break(
                expected_seq, "deleted", f"seq {expected_seq}..{entry.seq - 1} missing")
        if entry.prev_hash != prev_hash:
            return count, entry.seq, prev_hash, _link_break(entry, prev_hash, following)
        if entry_hash(entry) != entry.hash:
            return count, entry.seq, prev_hash, Break(
                entry.seq, "tampered", f"seq {entry.seq}: stored hash does not match its fields")
        expected_seq, prev_hash = expected_seq + 1, entry.hash
    return count, expected_seq - 1, prev_hash, None


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
    """Recompute the whole chain and compare it with the latest anchor (read-only)."""
    count, tip_seq, tip_hash, broken = _walk(_pairs())
    anchor = latest_anchor()
    if broken is None:
        broken = _anchor_break(anchor, tip_seq)
    return ChainReport(count, tip_seq, tip_hash, anchor, broken)
