import json
import re

from django.core.management.base import BaseCommand, CommandError

from oversight import actions, policy_keys
from oversight.models import Policy
from oversight.policy import current_policy
from oversight.serializers import iso

OPERATION_RE = re.compile(r"^(\*|[a-z0-9][a-z0-9_.-]{0,63})$")


def policy_json(policy: Policy) -> dict:
    return {
        "operation": policy.operation,
        "version": policy.version,
        **{key: getattr(policy, key) for key in policy_keys.KEYS},
        "notify": policy.notify_masked,  # credentials never printed
        "created_by": policy.created_by,
        "created_at": iso(policy.created_at),
    }


class Command(BaseCommand):
    help = (
        "Print the current policy of OPERATION ('*' is the default policy) as one JSON object; "
        "--set key=value (repeatable) writes a new, audited version and prints it."
    )

    def add_arguments(self, parser):
        parser.add_argument("operation")
        parser.add_argument("--set", action="append", dest="assignments", default=[], metavar="KEY=VALUE",
                            help=f"Keys: {', '.join(policy_keys.KEYS)}.")
        parser.add_argument("--note", default="", help="Why (kept with the version).")

    def handle(self, operation, assignments, note, **options):
        if not OPERATION_RE.fullmatch(operation):
            raise CommandError(f"Not an operation name: {operation[:80]!r}.", returncode=2)
        changes = {}
        for item in assignments:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep:
                raise CommandError(f"--set takes key=value, not {item[:80]!r}.", returncode=2)
            if key not in policy_keys.KEYS:
                raise CommandError(f"Unknown key {key[:40]!r}; keys: {', '.join(policy_keys.KEYS)}.", returncode=2)
            try:
                changes[key] = policy_keys.parse(key, text)
            except ValueError as error:
                raise CommandError(f"{key}: {error}.", returncode=2) from None
        policy = current_policy(operation)
        if changes:
            if len(note) > 300:
                raise CommandError("--note is at most 300 characters.", returncode=2)
            # A new operation's first version starts from what governed it until now.
            try:
                policy = actions.do_change_policy(
                    operation, policy.settings_dict() | changes, by="cli", note=note
                )
            except actions.PolicyInvalid as invalid:
                raise CommandError(str(invalid) + ".", returncode=2) from None
        self.stdout.write(json.dumps(policy_json(policy), sort_keys=False))
