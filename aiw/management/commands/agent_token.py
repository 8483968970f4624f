"""``manage.py agent_token create|revoke|list``: manage agents' API tokens from a shell."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from aiw import services
from aiw.models import AgentToken, TokenScope


class Command(BaseCommand):
    help = "Create (prints the token once), revoke or list agent API tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a token and print it once")
        create.add_argument("--user", required=True, help="username the token acts as")
        create.add_argument("--name", required=True)
        create.add_argument("--scopes", default="read",
                            help=f"comma-separated: {', '.join(TokenScope.values)}")
        create.add_argument("--expires-in-days", type=float, default=None)
        create.add_argument("--rate", default="", help='e.g. "120/min" (default AIW_TOKEN_RATE)')
        revoke = sub.add_parser("revoke", help="revoke a token by its prefix")
        revoke.add_argument("prefix")
        sub.add_parser("list", help="list tokens (never their secrets)")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"_{action}")(**options)

    def _create(self, *, user: str, name: str, scopes: str, expires_in_days, rate: str,
                **_) -> None:
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user {user!r}")
        expires = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            _row, plaintext = services.issue_token(
                user=owner, name=name, scopes=[s for s in scopes.split(",") if s],
                expires_at=expires, rate=rate)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(plaintext)

    def _revoke(self, *, prefix: str, **_) -> None:
        token = AgentToken.objects.filter(prefix=prefix.removeprefix("aiw_")[:8]).first()
        if token is None:
            raise CommandError(f"no token with prefix {prefix!r}")
        done = services.revoke_token(token.pk)
        self.stdout.write(f"revoked {token.name}" if done else f"{token.name} was already revoked")

    def _list(self, **_) -> None:
        for token in AgentToken.objects.select_related("user"):
            state = "revoked" if token.revoked_at else ("active" if token.is_active()
                                                        else "expired")
            self.stdout.write(f"aiw_{token.prefix}_…  {token.name}  {token.user}  "
                              f"{','.join(token.scopes)}  {state}")
