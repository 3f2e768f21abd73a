"""Managers' pages: reports and policies.

The CSV of a month is `/reports/2026-11.csv` (linked from the month's page);
`/reports/2026-11/.csv` and `/reports/2026-11/csv` answer the same, for whoever reads
the contract's "(+ `.csv`)" as a suffix of the page's address.
"""

from django.urls import path, re_path

from oversight.reviews import views as report_views

urlpatterns = [
    path("reports/", report_views.report_list, name="reports"),
    re_path(r"^reports/(?P<month>\d{4}-\d{2})/$", report_views.report_month, name="report"),
    re_path(r"^reports/(?P<month>\d{4}-\d{2})\.csv$", report_views.report_csv, name="report-csv"),
    re_path(r"^reports/(?P<month>\d{4}-\d{2})/\.?csv$", report_views.report_csv),
    path("policies/", report_views.policy_list, name="policies"),
    re_path(r"^policies/(?P<operation>[^/]+)/$", report_views.policy_detail, name="policy"),
    re_path(r"^policies/(?P<operation>[^/]+)/apply$", report_views.policy_apply, name="policy-apply"),
]
