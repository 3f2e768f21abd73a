import json as jsonlib
from datetime import UTC

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitoring import leaks

MIB = 1 << 20


def parse_at(text: str):
    """An ISO-8601 moment; a naive one is taken as UTC."""
    try:
        moment = parse_datetime(text.strip().replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"--at wants an ISO-8601 date and time, e.g. 2026-11-30T18:00:00Z, not {text!r}.")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = ("Run the leak scan over the stored samples as of --at (default now), as the periodic task does "
            "(it records and updates findings), then print the findings active at that time.")

    def add_arguments(self, parser):
        parser.add_argument("--at", help="ISO-8601 moment to scan as of (default: now).")
        parser.add_argument("--json", action="store_true", help="One JSON object per finding, one a line.")

    def handle(self, *args, at=None, json=False, **options):
        moment = parse_at(at) if at else timezone.now()
        leaks.scan(moment)
        findings = [leaks.finding_dict(f) for f in leaks.active_at(moment)]
        if json:
            for finding in findings:
                self.stdout.write(_json(finding))
            return
        if not findings:
            self.stdout.write(f"No leak suspects as of {moment.isoformat()}.")
            return
        self.stdout.write(f"{len(findings)} leak finding(s) as of {moment.isoformat()}:")
        for f in findings:
            who = f"agent {f['agent']}" if f["agent"] else "host process"
            self.stdout.write(
                f"#{f['id']} {f['status']} {f['process'] or '?'} (pid {f['pid']}) on {f['host']} ({who}): "
                f"+{f['slope_bytes_per_hour'] / MIB:.1f} MiB/h since {f['first_detected_at']}, "
                f"exhaustion {f['exhaustion_at'] or 'unknown'}"
            )


def _json(finding: dict) -> str:
    return jsonlib.dumps(finding, separators=(",", ":"))
