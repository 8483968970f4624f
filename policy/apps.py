from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, pre_delete


class PolicyConfig(AppConfig):
    name = "policy"
    verbose_name = "Policy, proposals and audit"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        from policy import checks  # noqa: F401 - registers the system checks
        from policy.catalogue import asset_type_errors
        from policy.notifications import forget_deleted_user, remember_subscription
        from twins.asset_types import register_validator
        from twins.roles import ensure_roles

        # Runs once, after the last app migrated, when every permission row exists.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="policy.ensure_roles")
        register_validator(asset_type_errors)
        pre_delete.connect(remember_subscription, sender=get_user_model(),
                           dispatch_uid="policy.remember_subscription")
        post_delete.connect(forget_deleted_user, sender=get_user_model(),
                            dispatch_uid="policy.forget_deleted_user")
