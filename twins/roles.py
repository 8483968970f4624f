"""The five roles as Django groups with model permissions, and per-twin access.

| role       | may (model permissions)                                   |
|------------|-----------------------------------------------------------|
| viewer     | read                                                      |
| agent      | read, ingest telemetry, propose, run simulations          |
| executor   | read, execute approved proposals                          |
| supervisor | read, propose, approve/reject (never their own), roll back |
| admin      | everything, on every twin, including Django admin         |

A role says *what* a user may do; per-twin object permissions (django-guardian, managed on
the twin's "Object permissions" page in Django admin) say *where*: ``twins.view_twin`` to see
a twin, ``twins.operate_twin`` to propose, approve, execute or roll back on it. Grant them to
a user or to a role group for one twin (``grant_twin``). Only the admin role carries them
globally. Groups are (re)created after every ``migrate``.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from guardian.shortcuts import assign_perm

from twins.choices import Role

READ = [
    "twins.view_asset", "telemetry.view_telemetrysample", "telemetry.view_anomaly",
    "telemetry.view_deadletter", "simulation.view_simulationrun", "policy.view_proposal",
    "policy.view_approval", "policy.view_policydocument", "twins.view_auditentry",
    "twins.view_changeevent",
]
ROLE_PERMISSIONS: dict[str, list[str]] = {
    Role.VIEWER: READ,
    Role.AGENT: READ + [
        "telemetry.add_telemetrysample", "policy.add_proposal", "simulation.add_simulationrun",
        "twins.add_asset", "twins.change_asset",  # register assets, report their metadata
    ],
    Role.EXECUTOR: READ + ["policy.execute_proposal"],
    Role.SUPERVISOR: READ + [
        "policy.add_proposal", "policy.approve_proposal", "policy.rollback_proposal",
        "simulation.add_simulationrun", "telemetry.acknowledge_anomaly",
    ],
}
#: What a role may do on a twin it is granted (object permissions of ``twins.Twin``).
TWIN_ACCESS: dict[str, list[str]] = {
    Role.VIEWER: ["view_twin"],
    Role.AGENT: ["view_twin", "operate_twin"],
    Role.EXECUTOR: ["view_twin", "operate_twin"],
    Role.SUPERVISOR: ["view_twin", "operate_twin"],
    Role.ADMIN: ["view_twin", "operate_twin"],
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


def grant_twin(twin, *, to, role: str) -> None:
    """Give ``to`` (a user or group) ``role``'s access to one ``twin`` (object permissions)."""
    for codename in TWIN_ACCESS[role]:
        assign_perm(f"twins.{codename}", to, twin)


def grant_twin_to_role_groups(twin) -> None:
    """Every role group gets its role's access to ``twin`` (the demo's single-plant setup)."""
    for role in TWIN_ACCESS:
        grant_twin(twin, to=Group.objects.get(name=role), role=role)


def grant_all_twins(user, role: str) -> None:
    """Site-wide access for ``role`` on every twin (global ``twins.*`` permissions)."""
    user.user_permissions.add(*_permissions([f"twins.{c}" for c in TWIN_ACCESS[role]]))


def role_of(user) -> str:
    """The highest role the user holds ('admin' for superusers, '' for none)."""
    if user.is_superuser:
        return Role.ADMIN
    names = set(user.groups.values_list("name", flat=True))
    return next((str(r) for r in ROLE_ORDER if r in names), "")
