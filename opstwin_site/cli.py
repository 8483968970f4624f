"""The ``opstwin`` console script: a thin alias for ``manage.py`` (e.g. ``opstwin demo``)."""

import os
import sys


def main() -> None:
    """Run ``opstwin <command> ...`` as ``manage.py <command> ...``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["opstwin", *sys.argv[1:]])
