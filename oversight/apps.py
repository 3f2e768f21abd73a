from django.apps import AppConfig


class OversightConfig(AppConfig):
    name = "oversight"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from oversight import logins

        user_logged_in.connect(logins.on_logged_in, dispatch_uid="oversight-audit-login")
        user_login_failed.connect(logins.on_login_failed, dispatch_uid="oversight-audit-login-failed")
