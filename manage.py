#!/usr/bin/env python
"""Django's command-line utility for OpsTwin."""

import os
import sys


def main() -> None:
    """Run a management command with OpsTwin's settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")
    import django
    from django.core.management import execute_from_command_line

    django.setup()
    from opstwin_site.tracing import setup_tracing

    setup_tracing("manage")  # TRACING_ENABLED=1: spans of ingest_mqtt, runserver, ...
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
