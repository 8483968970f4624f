#!/usr/bin/env python
"""Django's command-line utility for OpsTwin."""

import os
import sys


def main() -> None:
    """Run a management command with OpsTwin's settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
