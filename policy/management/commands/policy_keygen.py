"""``manage.py policy_keygen``: a new Ed25519 key pair for signing policy documents."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from policy.signing import generate_key_pair


class Command(BaseCommand):
    help = ("Write <key-id>.key (PKCS#8 PEM, keep it offline) and <key-id>.pub into --out, and "
            "print the POLICY_PUBLIC_KEYS entry that pins the public key.")

    def add_arguments(self, parser):
        parser.add_argument("key_id", help="name of the key, e.g. ops-2026")
        parser.add_argument("--out", default=".", help="folder for the key files (default .)")

    def handle(self, *args, **opts):
        try:
            private, public = generate_key_pair(Path(opts["out"]), opts["key_id"])
        except FileExistsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"private key: {private} (mode 0600; never on the OpsTwin server)")
        self.stdout.write(f"POLICY_PUBLIC_KEYS={opts['key_id']}:{public}")
