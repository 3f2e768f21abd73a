import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from oversight.roles import ROLES


class Command(BaseCommand):
    help = "Create a person with a role (operator or manager). Without --password, one is generated and printed."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--role", required=True, choices=sorted(ROLES))
        parser.add_argument("--password", default=None)
        parser.add_argument("--email", default="")

    def handle(self, name, role, password, email, **options):
        User = get_user_model()
        if User.objects.filter(username=name).exists():
            raise CommandError(f"A user named {name!r} already exists.")
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(12)
        else:
            try:
                validate_password(password)
            except ValidationError as error:
                raise CommandError("Password not accepted: " + " ".join(error.messages)) from None
        with transaction.atomic():
            user = User.objects.create_user(username=name, email=email, password=password)
            user.groups.add(Group.objects.get_or_create(name=ROLES[role])[0])
        self.stdout.write(f"Created {role} {name!r}.")
        if generated:
            self.stdout.write(f"Generated password (shown once): {password}")
