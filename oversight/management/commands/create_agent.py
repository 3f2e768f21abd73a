from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from oversight import keys
from oversight.models import Agent


class Command(BaseCommand):
    help = "Create an agent (or a new key for an existing one) and print its API key as the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--description", default="")
        parser.add_argument("--label", default="", help="A note to tell this key apart.")

    def handle(self, name, description, label, **options):
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("An agent name is 1–100 characters.")
        with transaction.atomic():
            agent, created = Agent.objects.get_or_create(name=name, defaults={"description": description})
            _, raw = keys.issue(agent, by="cli", label=label)
        verb = "Created agent" if created else "New key for existing agent"
        self.stdout.write(f"{verb} {agent.name!r}. Keep this key secret; it is shown only once:")
        self.stdout.write(raw)
