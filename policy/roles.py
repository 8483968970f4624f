"""The five roles as Django groups with model permissions.

| role       | may                                                  |
|------------|------------------------------------------------------|
| viewer     | read                                                 |
| agent      | read, ingest telemetry, propose, run simulations     |
| executor   | read, execute approved proposals                     |
| supervisor | read, propose, approve/reject (not their own)        |
| admin      | everything, including Django admin                   |

Groups are (re)created after every ``migrate`` so a fresh database always has them; admins
then manage membership and per-twin grants in Django admin.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from policy.choices import Role

READ = [
    "twins.view_twin", "twins.view_asset", "telemetry.view_telemetrysample",
    "telemetry.view_anomaly", "telemetry.view_deadletter", "simulation.view_simulationrun",
    "policy.view_proposal", "policy.view_auditentry", "aiw.view_changeevent",
]
OPERATE = ["twins.operate_twin"]
ROLE_PERMISSIONS: dict[str, list[str]] = {
    Role.VIEWER: READ,
    Role.AGENT: READ + OPERATE + [
        "telemetry.add_telemetrysample", "policy.add_proposal", "simulation.add_simulationrun",
    ],
    Role.EXECUTOR: READ + OPERATE + ["policy.execute_proposal"],
    Role.SUPERVISOR: READ + OPERATE + [
        "policy.add_proposal", "policy.approve_proposal", "simulation.add_simulationrun",
    ],
}
ADMIN_APPS = ["twins", "telemetry", "simulation", "policy", "aiw", "auth", "guardian"]
ROLE_ORDER = [Role.ADMIN, Role.SUPERVISOR, Role.EXECUTOR, Role.AGENT, Role.VIEWER]


def _permissions(codes: list[str]) -> list[Permission]:
    perms = []
    for code in codes:
        app_label, codename = code.split(".")
        perms.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return perms


def ensure_roles(**_kwargs) -> None:
    """Create the five role groups and set their permissions (idempotent; post_migrate hook)."""
    for role, codes in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(_permissions(codes))
    admin, _ = Group.objects.get_or_create(name=Role.ADMIN)
    admin.permissions.set(Permission.objects.filter(content_type__app_label__in=ADMIN_APPS))


def role_of(user) -> str:
    """The highest role the user holds ('admin' for superusers, '' for none)."""
    if user.is_superuser:
        return Role.ADMIN
    names = set(user.groups.values_list("name", flat=True))
    return next((str(r) for r in ROLE_ORDER if r in names), "")
