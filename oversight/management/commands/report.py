import csv
import io

from django.core.management.base import BaseCommand, CommandError

from oversight.reviews import reports


class Command(BaseCommand):
    help = "The monthly effectiveness review of YYYY-MM (UTC) as readable tables, or as CSV with --csv."

    def add_arguments(self, parser):
        parser.add_argument("month", help="YYYY-MM, e.g. 2026-11")
        parser.add_argument("--csv", action="store_true", help="One figure a line: section,name,metric,value.")
        parser.add_argument("--live", action="store_true", help="Recompute even when a snapshot is stored.")

    def handle(self, month, csv, live, **options):
        try:
            month_date = reports.parse_month(month)
        except reports.BadMonth as error:
            raise CommandError(str(error)) from None
        data = reports.review(month_date, live=live)
        if csv:
            self._csv(data)
        else:
            self._tables(data)

    def _csv(self, data: dict) -> None:
        # Written whole, as the web download writes it: a cell holding a line break is
        # quoted (a writer without a line terminator would not quote it).
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in reports.csv_rows(data):
            writer.writerow([reports.csv_safe(cell) for cell in row])
        self.stdout.write(buffer.getvalue(), ending="")

    def _tables(self, data: dict) -> None:
        source = f"stored snapshot of {data['snapshot_at'][:16]} UTC" if data["snapshot_at"] else "live figures"
        self.stdout.write(f"Oversight review {data['month']} ({source})")
        self.stdout.write(f"Requests submitted {data['start'][:10]} to before {data['end'][:10]} (UTC)\n")
        headline = [[c["label"], c["value"], c["change"] and f"{c['change']} (was {c['previous']})"]
                    for c in reports.cards(data)]
        self._table("Headline", ("Figure", "Value", "Change vs month before"), headline)
        for table in reports.tables(data):
            self._table(table["title"], table["columns"], table["rows"])

    def _table(self, title: str, columns, rows) -> None:
        self.stdout.write(f"\n{title}")
        if not rows:
            self.stdout.write("  (none)")
            return
        cells = [list(columns)] + [[str(c) for c in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
        for n, row in enumerate(cells):
            self.stdout.write("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
            if n == 0:
                self.stdout.write("  " + "  ".join("-" * w for w in widths))

