from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

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
        count = ApiKey.objects.filter(agent=agent, revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.stdout.write(f"Revoked {count} key(s) of {agent.name!r}.")
