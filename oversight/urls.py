from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from oversight import health, links, logins, views
from oversight.api import views as api

api_patterns = [
    re_path(r"^api/v1/requests/?$", api.requests_collection, name="api-requests"),
    re_path(r"^api/v1/requests/(?P<request_id>[^/]+)/cancel/?$", api.cancel, name="api-cancel"),
    re_path(r"^api/v1/requests/(?P<request_id>[^/]+)/receipt/?$", api.receipt, name="api-receipt"),
    re_path(r"^api/v1/requests/(?P<request_id>[^/]+)/?$", api.request_detail, name="api-request"),
    re_path(r"^api/v1/metrics/?$", api.push_metrics, name="api-metrics"),
    re_path(r"^api/v1/openapi\.json$", api.openapi, name="api-openapi"),
    re_path(r"^api/v1/keys/?$", api.keys, name="api-keys"),
]

if settings.OVERSIGHT_BENCH:
    from oversight.api.bench import insert_one

    api_patterns.append(path("api/bench/insert", insert_one))
    api_patterns.append(path("api/bench/insert-django", insert_one))  # on Django's handler (oversight/asgi.py)

urlpatterns = [
    *api_patterns,
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("login/", logins.login, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("queue/", views.queue, name="queue"),
    path("requests/<uuid:request_id>/", views.request_page, name="request"),
    path("requests/<uuid:request_id>/decide", views.decide, name="decide"),
    path("requests/decide", views.decide_bulk, name="decide-bulk"),
    path("grants/", views.grants, name="grants"),
    path("grants/<int:grant_id>/revoke", views.revoke_grant, name="revoke-grant"),
    path("history/", views.history, name="history"),
    path("d/<str:token>/", links.decision_link, name="decision-link"),
    path("", include("monitoring.urls")),
    path("", include("oversight.reviews.urls")),
    path("admin/login/", logins.admin_login),
    path("admin/", admin.site.urls),
]

handler404 = "oversight.views.not_found"
handler500 = "oversight.views.server_error"
handler403 = "oversight.views.forbidden"
handler400 = "oversight.views.bad_request"
