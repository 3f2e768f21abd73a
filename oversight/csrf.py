"""Django's CSRF protection, with one allowance for the decision-link pages.

Those pages send `Referrer-Policy: no-referrer` (their URL holds a token), so the
browser's POST from them carries `Origin: null` and no `Referer`, by the Fetch standard.
For POSTs to `/d/…/` only, that missing origin is not held against them; the CSRF token
(form field against cookie) is still required, and the session cookie is SameSite.
"""

from __future__ import annotations

from django.middleware.csrf import CsrfViewMiddleware


def _link_page(request) -> bool:
    return request.path_info.startswith("/d/")


class CsrfMiddleware(CsrfViewMiddleware):
    def _origin_verified(self, request):
        if _link_page(request) and request.META.get("HTTP_ORIGIN") == "null":
            return True
        return super()._origin_verified(request)

    def _check_referer(self, request):
        if _link_page(request) and not request.META.get("HTTP_REFERER"):
            return
        super()._check_referer(request)
