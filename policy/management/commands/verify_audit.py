"""``manage.py verify_audit``: recompute the audit chain and report the first broken entry."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from policy.audit_chain import verify_chain, write_anchor


class Command(BaseCommand):
    help = ("Recompute the SHA-256 audit chain and compare it with the latest anchor; exit 1 "
            "with the first broken entry (tampered, deleted, reordered, relinked, truncated).")

    def add_arguments(self, parser):
        parser.add_argument("--anchor", action="store_true",
                            help="after a clean check, anchor the current tip")

    def handle(self, *args, **opts):
        report = verify_chain()
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
