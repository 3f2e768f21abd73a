from django.core.management.base import BaseCommand, CommandError

from oversight import keys
from oversight.models import Agent, ApiKey


class Command(BaseCommand):
    help = "Revoke every API key of an agent."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, name, **options):
        try:
            agent = Agent.objects.get(name=name)
        except Agent.DoesNotExist:
            raise CommandError(f"No agent named {name!r}.") from None
        count = keys.revoke(ApiKey.objects.filter(agent=agent), by="cli")
        self.stdout.write(f"Revoked {count} key(s) of {agent.name!r}.")
