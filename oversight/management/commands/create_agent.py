import re

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from oversight import keys
from oversight.api.schemas import OPERATION_PATTERN
from oversight.models import Agent

OPERATION_RE = re.compile(OPERATION_PATTERN)


class Command(BaseCommand):
    help = (
        "Create an agent (or a new key for an existing one), set its owner, bound hosts, operations and "
        "pending limit, and print its API key as the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--description", default=None)
        parser.add_argument("--label", default="", help="A note to tell this key apart.")
        parser.add_argument("--owner", default=None, help="The user who runs this agent (never decides its requests).")
        parser.add_argument(
            "--host", action="append", dest="hosts", default=None,
            help="A host the agent runs on (repeatable): its pressure is read from there, and it may name no other.",
        )
        parser.add_argument("--operations", default=None, help="Comma-separated operations it may ask about (empty: any).")
        parser.add_argument("--max-pending", type=int, default=None, help="Critical requests it may have pending (default 20).")

    def handle(self, name, description, label, owner, hosts, operations, max_pending, **options):
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("An agent name is 1–100 characters.")
        changes = {}
        if description is not None:
            changes["description"] = description
        if owner is not None:
            changes["owner"] = self._owner(owner)
        if hosts is not None:
            hosts = [h.strip() for h in hosts if h.strip()]
            if any(len(h) > 255 for h in hosts):
                raise CommandError("A host name is at most 255 characters.")
            changes["hosts"] = list(dict.fromkeys(hosts))
        if operations is not None:
            names = [o.strip() for o in operations.split(",") if o.strip()]
            bad = [o for o in names if not OPERATION_RE.fullmatch(o)]
            if bad:
                raise CommandError(f"Not an operation name: {bad[0]!r}.")
            changes["operations"] = list(dict.fromkeys(names))
        if max_pending is not None:
            if not 1 <= max_pending <= 100_000:
                raise CommandError("--max-pending is between 1 and 100000.")
            changes["max_pending"] = max_pending
        with transaction.atomic():
            agent, created = Agent.objects.get_or_create(name=name)
            for field, value in changes.items():
                setattr(agent, field, value)
            if changes:
                agent.save(update_fields=list(changes))
            _, raw = keys.issue(agent, by="cli", label=label)
        verb = "Created agent" if created else "New key for existing agent"
        details = []
        if agent.owner_id:
            details.append(f"owner {agent.owner.get_username()}")
        if agent.hosts:
            details.append(f"hosts {', '.join(agent.hosts)}")
        if agent.operations:
            details.append(f"operations {', '.join(agent.operations)}")
        details.append(f"at most {agent.max_pending} pending")
        self.stdout.write(f"{verb} {agent.name!r} ({'; '.join(details)}).")
        self.stdout.write("Keep this key secret; it is shown only once:")
        self.stdout.write(raw)

    def _owner(self, username: str):
        if username == "":
            return None
        try:
            return get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {username!r}.") from None
