"""Local logins for `make run`: an operator, a manager and an `admin` superuser
(for /admin/), with generated passwords.

The passwords are generated on the first run, kept in var/local-logins.txt
(readable by the owner only) and printed on each run so a newcomer can sign in.
"""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from oversight.policy import ensure_default_policy
from oversight.roles import MANAGERS, OPERATORS

# (username, group); the group None marks the superuser who can open /admin/.
LOGINS = (("operator", OPERATORS), ("manager", MANAGERS), ("admin", None))


class Command(BaseCommand):
    help = "Seed the default policy and ensure local operator, manager and admin logins (for make run)."

    def add_arguments(self, parser):
        parser.add_argument("--policy-only", action="store_true", help="Only make sure the default policy exists.")

    def handle(self, policy_only=False, **options):
        ensure_default_policy()
        if policy_only:
            return
        path = settings.VAR_DIR / "local-logins.txt"
        known = {}
        if path.exists():
            for line in path.read_text().splitlines():
                name, _, password = line.partition(" ")
                known[name] = password
        User = get_user_model()
        for name, group in LOGINS:
            user = User.objects.filter(username=name).first()
            if user is None or name not in known or not user.check_password(known[name]):
                password = secrets.token_urlsafe(9)
                if user is None:
                    user = User.objects.create_user(username=name, password=password)
                else:
                    user.set_password(password)
                    user.save()
                known[name] = password
            if group is None:
                if not (user.is_staff and user.is_superuser):
                    user.is_staff = user.is_superuser = True
                    user.save(update_fields=["is_staff", "is_superuser"])
            else:
                user.groups.add(Group.objects.get_or_create(name=group)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{name} {known[name]}\n" for name, _ in LOGINS))
        path.chmod(0o600)
        if options.get("verbosity", 1) >= 1:
            for name, _ in LOGINS:
                self.stdout.write(f"  {name:<9} password: {known[name]}")
