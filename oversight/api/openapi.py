"""openapi.json, generated from the same pydantic models that validate requests."""

from __future__ import annotations

import functools

from pydantic.json_schema import models_json_schema

from oversight.api import schemas

_MODELS = [
    schemas.SubmitRequest,
    schemas.RequestResource,
    schemas.RequestList,
    schemas.MetricsPush,
    schemas.MetricsAccepted,
    schemas.ErrorResponse,
    schemas.ReceiptResponse,
    schemas.Jwks,
]

_ERRORS = {
    "400": "validation_error or malformed_json",
    "401": "unauthenticated: no, unknown or revoked key",
    "403": "forbidden: e.g. an operation this agent is not allowed to ask about",
    "404": "not_found: no such request for this agent",
    "405": "method_not_allowed",
    "409": "already_decided, idempotency_conflict, or not_decided (no receipt while pending); "
           "already_approved: a person's repeat approval, on the decide page",
    "413": "payload_too_large: body over 256 KiB, payload over 64 KiB",
    "415": "unsupported_media_type: the body is not application/json",
    "429": "rate_limited, or too_many_pending for a critical submission over the agent's max_pending (see Retry-After)",
    "503": "unavailable: a dependency is down; safe to retry",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


# Where a created request can be followed: its read and its cancel (stateful clients and
# testers follow these from the 201).
_REQUEST_LINKS = {
    "GetRequest": {"operationId": "getRequest", "parameters": {"id": "$response.body#/id"}},
    "CancelRequest": {"operationId": "cancelRequest", "parameters": {"id": "$response.body#/id"}},
}


def _linked(response: dict) -> dict:
    return response | {"links": _REQUEST_LINKS}


def _responses(ok: dict[str, dict], *errors: str) -> dict:
    responses = dict(ok)
    for status in errors:
        responses[status] = _json("ErrorResponse", _ERRORS[status])
    return responses


_WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "Hold the answer until the request is decided or this many seconds pass (0–55).",
    "schema": {"type": "integer", "minimum": 0, "maximum": schemas.MAX_WAIT_SECONDS},
}
# Any string: an id that is no request of this agent's (a UUID or not) is a 404 (§4).
_ID = {
    "name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
    "description": "The request's id (a UUID); any other value names no request: 404.",
}
_COMMON = ("401", "429", "503")


@functools.cache
def document() -> dict:
    _, definitions = models_json_schema(
        [(model, "validation") for model in _MODELS], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Oversight agent API",
            "version": "1",
            "description": "Agents ask permission before risky operations; policies and people decide.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": definitions["$defs"],
        },
        "paths": {
            "/api/v1/requests": {
                "post": {
                    "summary": "Submit an oversight request",
                    "operationId": "submitRequest",
                    "parameters": [
                        _WAIT,
                        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
                    ],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SubmitRequest")}}},
                    "responses": _responses(
                        {
                            "201": _linked(_json("RequestResource", "Created; a non-critical request is already approved.")),
                            "200": _linked(_json("RequestResource", "An idempotent replay: the existing request.")),
                        },
                        "400", "403", "409", "413", "415", *_COMMON,
                    ),
                },
                "get": {
                    "summary": "List the agent's own requests, newest first",
                    "operationId": "listRequests",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending", "approved", "rejected", "cancelled"]}},
                        {"name": "operation", "in": "query", "schema": {"type": "string", "minLength": 1}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": schemas.CURSOR_PATTERN}},
                    ],
                    "responses": _responses({"200": _json("RequestList", "A page of requests.")}, "400", *_COMMON),
                },
            },
            "/api/v1/requests/{id}": {
                "get": {
                    "summary": "Read one request; long-poll with ?wait=N",
                    "operationId": "getRequest",
                    "parameters": [_ID, _WAIT],
                    "responses": _responses({"200": _json("RequestResource", "The request.")}, "400", "404", *_COMMON),
                }
            },
            "/api/v1/requests/{id}/cancel": {
                "post": {
                    "summary": "Cancel a pending request",
                    "operationId": "cancelRequest",
                    "parameters": [_ID],
                    "responses": _responses({"200": _json("RequestResource", "Cancelled.")}, "404", "409", *_COMMON),
                }
            },
            "/api/v1/requests/{id}/receipt": {
                "get": {
                    "summary": "A fresh signed receipt of the request's final decision",
                    "description": "Valid for the policy's receipt_ttl_seconds; 409 not_decided while pending.",
                    "operationId": "getReceipt",
                    "parameters": [_ID],
                    "responses": _responses({"200": _json("ReceiptResponse", "The receipt.")}, "404", "409", *_COMMON),
                }
            },
            "/api/v1/keys": {
                "get": {
                    "summary": "The public keys that verify decision receipts (JWKS)",
                    "operationId": "getKeys",
                    "security": [],
                    "responses": {"200": _json("Jwks", "JSON Web Key Set.")},
                }
            },
            "/api/v1/metrics": {
                "post": {
                    "summary": "Push memory samples of the agent's processes",
                    "operationId": "pushMetrics",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("MetricsPush")}}},
                    "responses": _responses(
                        {"202": _json("MetricsAccepted", "Stored.")}, "400", "413", "415", *_COMMON
                    ),
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3 document."}},
                }
            },
        },
    }
