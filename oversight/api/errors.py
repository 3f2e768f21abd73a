"""The API's one error shape: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from django.http import JsonResponse


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        return error_response(self.status, self.code, self.message, self.details, self.headers)


def error_response(status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message, "details": details or {}}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def validation_error(details: dict[str, list[str]], message: str = "Some fields are not valid.") -> ApiError:
    return ApiError(400, "validation_error", message, details)


def not_found() -> ApiError:
    return ApiError(404, "not_found", "No such request for this agent.")


def method_not_allowed(allowed: list[str]) -> JsonResponse:
    return error_response(
        405, "method_not_allowed", f"Use {' or '.join(allowed)} here.", headers={"Allow": ", ".join(allowed)}
    )


RETRY_AFTER_SECONDS = 2


def unavailable(message: str = "The database is not available; retry shortly.") -> JsonResponse:
    """503: a dependency is down; safe to retry after Retry-After seconds."""
    return error_response(503, "unavailable", message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def internal_error() -> JsonResponse:
    """500: a fault of the server's own, logged with its traceback; retrying will not help."""
    return error_response(500, "internal_error", "The server failed to answer this request; it has been logged.")
