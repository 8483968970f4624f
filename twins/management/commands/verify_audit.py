"""``manage.py verify_audit``: recompute the audit chain and report the first broken entry."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from twins.audit_chain import verify_chain, write_anchor


class Command(BaseCommand):
    help = ("Recompute the audit chain (HMAC-SHA256 with AUDIT_HMAC_KEY; SHA-256 for entries "
            "from before migration 0005) and compare it with the latest anchor; print the "
            "scheme of each span; exit 1 with the first broken entry (tampered, deleted, "
            "reordered, relinked, unknown_key, downgraded, unsealed, truncated, "
            "anchor_mismatch).")

    def add_arguments(self, parser):
        parser.add_argument("--anchor", action="store_true",
                            help="after a clean check, anchor the current tip")

    def handle(self, *args, **opts):
        report = verify_chain()
        for span in report.spans:
            self.stdout.write(f"  {span}")
        if not report.ok:
            b = report.broken
            raise CommandError(f"audit chain BROKEN at seq {b.seq}: {b.kind}: {b.detail}")
        anchored = (f"anchored at seq {report.anchor['seq']} ({report.anchor['source']})"
                    if report.anchor else "no anchor yet")
        self.stdout.write(f"audit chain OK: {report.entries} entries, tip seq {report.tip_seq} "
                          f"{report.tip_hash[:16]}…, {anchored}")
        if opts["anchor"]:
            anchor = write_anchor()
            if anchor is not None:
                self.stdout.write(f"anchored seq {anchor.seq}")
