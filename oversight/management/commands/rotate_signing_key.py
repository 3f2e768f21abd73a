from django.core.management.base import BaseCommand, CommandError

from oversight import receipts


class Command(BaseCommand):
    help = (
        "Add a new receipt signing key: published in the JWKS (/api/v1/keys) at once, signing "
        "after --delay seconds. Keys whose receipts have all expired are removed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--delay", type=int, default=300,
                            help="Seconds between publishing the new key and its first signature "
                                 "(default 300: verifiers that cache the JWKS see it first).")

    def handle(self, delay, **options):
        if delay < 0:
            raise CommandError("--delay must be 0 or more seconds")
        try:
            key = receipts.rotate(delay_seconds=delay)
        except receipts.SigningKeyError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"New signing key {key.kid} published; it signs from {key.signs_from:%Y-%m-%d %H:%M:%S} UTC.")
