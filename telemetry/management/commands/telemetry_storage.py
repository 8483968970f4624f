"""``manage.py telemetry_storage``: inspect telemetry storage, refresh rollups, apply policies."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from telemetry import rollups, storage


class Command(BaseCommand):
    help = ("Show how telemetry is stored (engine, approximate rows, pending rollup work); "
            "optionally refresh the rollups now or re-apply the TimescaleDB policies.")

    def add_arguments(self, parser):
        parser.add_argument("--refresh-rollups", action="store_true",
                            help="fold every dirty range into the rollups now (plain PostgreSQL)")
        parser.add_argument("--apply-policies", action="store_true",
                            help="re-install compression/retention/refresh policies (TimescaleDB)")

    def handle(self, *args, **opts):
        timescale = storage.uses_continuous_aggregates()
        if opts["apply_policies"]:
            if not timescale:
                raise CommandError("the rollups are plain tables: TimescaleDB was not enabled "
                                   "when migration 0004 ran")
            with connection.cursor() as cursor:
                storage.apply_timescale_policies(cursor)
            self.stdout.write("TimescaleDB policies applied")
        if opts["refresh_rollups"]:
            report = rollups.refresh_rollups()
            self.stdout.write(f"rollups: {report.ranges} dirty ranges folded, "
                              f"{report.minute_rows} minute and {report.hour_rows} hour rows "
                              f"rewritten {report.skipped}".rstrip())
        self._describe(timescale)

    def _describe(self, timescale: bool) -> None:
        engine = "TimescaleDB (hypertable, continuous aggregates)" if timescale \
            else "PostgreSQL (BRIN + btree, incremental rollup tables)"
        self.stdout.write(f"engine: {engine}")
        with connection.cursor() as cursor:
            for table in (storage.SAMPLES, storage.ROLLUP_1M, storage.ROLLUP_1H, storage.DIRTY):
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s",
                               [table])
                row = cursor.fetchone()
                estimate = "missing" if row is None else \
                    "not analysed yet" if row[0] < 0 else f"~{row[0]:,} rows"
                self.stdout.write(f"  {table:<28} {estimate}")
