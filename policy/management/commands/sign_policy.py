"""``manage.py sign_policy``: sign a policy file's exact bytes, optionally publish it."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from policy.rules import PolicyInvalid
from policy.signing import load_private_key, sign
from twins.models import Twin


class Command(BaseCommand):
    help = ("Sign a policy.v1 JSON file with an Ed25519 private key: writes <file>.sig "
            "(key_id:signature). With --twin, also store it as that twin's next version.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="policy body (UTF-8, signed byte for byte)")
        parser.add_argument("--key", required=True, help="private key file (policy_keygen)")
        parser.add_argument("--key-id", required=True, help="id the public key is pinned under")
        parser.add_argument("--twin", default=None, help="publish to this twin (slug)")

    def handle(self, *args, **opts):
        path = Path(opts["file"])
        body = path.read_bytes().decode("utf-8")
        signature = sign(body, load_private_key(Path(opts["key"])))
        path.with_name(path.name + ".sig").write_text(f"{opts['key_id']}:{signature}\n")
        self.stdout.write(f"signature: {signature}")
        if opts["twin"]:
            self._publish(opts["twin"], body, signature, opts["key_id"])

    def _publish(self, slug: str, body: str, signature: str, key_id: str) -> None:
        from policy.services import publish_policy

        twin = Twin.objects.filter(slug=slug).first()
        if twin is None:
            raise CommandError(f"no twin {slug!r}")
        try:
            document, verdict = publish_policy(twin=twin, body=body, signature=signature,
                                               key_id=key_id, actor="cli")
        except PolicyInvalid as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"stored as v{document.version} of {slug}: {verdict.reason}")
