"""``manage.py tail`` (``opstwin tail``): follow the change feed and print each event.

Resumes from a cursor file, which is rewritten after every printed event, so a restart
continues right after the last event shown: nothing is skipped and nothing printed twice
(unless the process dies between printing and saving: at-least-once).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from aiw.client import AIWClient, CursorFile, CursorGone


class Command(BaseCommand):
    help = "Follow the AIW change feed over SSE with resume, printing one event per line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=os.environ.get("OPSTWIN_URL",
                                                            "http://127.0.0.1:8000"))
        parser.add_argument("--token", default=os.environ.get("OPSTWIN_TOKEN"),
                            help="agent token (default $OPSTWIN_TOKEN)")
        parser.add_argument("--cursor-file", default=str(Path.home() / ".opstwin-tail-cursor"))
        parser.add_argument("--since", default=None, help="start here instead of the file")
        parser.add_argument("--types", default=None)
        parser.add_argument("--twin", default=None)
        parser.add_argument("--json", action="store_true", help="print whole events as JSON")
        parser.add_argument("--max-events", type=int, default=None,
                            help="stop after this many events")

    def handle(self, *args, **options) -> None:
        client = AIWClient(options["url"], options["token"])
        store = CursorFile(options["cursor_file"])
        cursor = options["since"] or store.load()
        shown, limit = 0, options["max_events"]
        try:
            while limit is None or shown < limit:
                try:
                    for event in client.follow(cursor, types=options["types"],
                                               twin=options["twin"]):
                        self.stdout.write(self._line(event, options["json"]))
                        cursor = event["cursor"]
                        store.save(cursor)
                        shown += 1
                        if limit is not None and shown >= limit:
                            return
                except CursorGone as exc:
                    cursor = client.snapshot()["cursor"]
                    sys.stderr.write(f"{exc}; resynced from the snapshot (events before it "
                                     "are not shown)\n")
        except KeyboardInterrupt:
            return
        finally:
            client.close()

    @staticmethod
    def _line(event: dict, as_json: bool) -> str:
        if as_json:
            return json.dumps(event, separators=(",", ":"))
        return (f"{event['at']}  #{event['id']}  {event['type']:<22} "
                f"{event['twin'] or '-'}/{event['resource_id']}  by {event['actor']}")
