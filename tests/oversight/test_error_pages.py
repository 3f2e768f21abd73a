"""The last-resort error handler: a database that cannot be reached is a 503 with
Retry-After (a page, or the API's JSON), anything else a 500; neither needs the
database to be shown."""

import json

import pytest
from django.db import OperationalError
from django.test import RequestFactory

from oversight.views import server_error


def _answer(path: str, error: Exception):
    request = RequestFactory().get(path)
    try:
        raise error
    except Exception:
        return server_error(request)


def test_a_page_whose_database_is_unreachable_is_a_503_with_retry_after():
    response = _answer("/queue/", OperationalError("connection refused"))
    assert response.status_code == 503 and int(response["Retry-After"]) >= 1
    assert b"Oversight is unavailable" in response.content


def test_the_api_whose_database_is_unreachable_is_a_503_with_retry_after():
    response = _answer("/api/v1/keys", OperationalError("connection refused"))
    assert response.status_code == 503 and int(response["Retry-After"]) >= 1
    assert json.loads(response.content)["error"]["code"] == "unavailable"


@pytest.mark.parametrize("path, code", [("/queue/", None), ("/api/v1/keys", "internal_error")])
def test_any_other_error_is_a_500_without_the_database(path, code, django_db_blocker):
    with django_db_blocker.block():  # the error page itself must not need the database
        response = _answer(path, RuntimeError("boom"))
    assert response.status_code == 500 and "Retry-After" not in response
    if code:
        assert json.loads(response.content)["error"]["code"] == code
    else:
        assert b"Something went wrong" in response.content
