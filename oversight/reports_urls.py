"""Managers' pages: reports and policies."""

urlpatterns: list = []
