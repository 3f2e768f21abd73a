"""The agent API, /api/v1/.

Views are async so that long-polls cost no thread. Each request makes one hop
into a worker thread for all of its database work (`_in_thread`), because under
ASGI every hop costs time. Errors always come back in the one JSON shape; no
input yields a 500 or an HTML page.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from pydantic import ValidationError

from oversight import actions, jsontext, receipts
from oversight.api import schemas, submitread
from oversight.api.errors import (
    ApiError,
    internal_error,
    method_not_allowed,
    not_found,
    unavailable,
    validation_error,
)
from oversight.dbclock import DatabaseNow
from oversight.events import forget_channel, request_group
from oversight.models import ApiKey, OversightRequest, Status, hash_key
from oversight.serializers import request_dict

log = logging.getLogger(__name__)

LAST_USED_RESOLUTION = 60  # seconds: a key's last-used time is written at most this often


# --- Plumbing ---------------------------------------------------------------------


def api_view(*methods: str, query: dict[str, tuple[str, ...]] | None = None):
    """Method check, query parameters checked against the published ones (`query`:
    the names each method takes, as in the OpenAPI document; any other is a 400, spec
    §9.2), and every failure mapped to the one error shape."""
    allowed = {method: frozenset((query or {}).get(method, ())) for method in methods}

    def decorator(view):
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs):
            if request.method not in methods:
                return method_not_allowed(list(methods))
            try:
                if unknown := sorted(set(request.GET) - allowed[request.method]):
                    raise validation_error({name: ["is not a parameter of this endpoint"] for name in unknown},
                                           "Unknown query parameter: the OpenAPI document lists what each endpoint takes.")
                return await view(request, *args, **kwargs)
            except ApiError as error:
                return error.response()
            except (OperationalError, InterfaceError):
                # The database is unreachable (or the pool's short wait ran out): a
                # dependency is down, so the client may retry.
                log.warning("Database unavailable on %s", request.path, exc_info=True)
                return unavailable()
            except Exception:
                # Anything else is a bug, not an outage: a 503 would invite the SDK to
                # retry it forever.
                log.exception("Unexpected error on %s", request.path)
                return internal_error()

        wrapper.query_parameters = allowed
        return wrapper

    return decorator


def _in_thread(func, *args, **kwargs):
    """Run `func` in a worker thread with a fresh-or-healthy connection."""

    def run():
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)()


def _bearer(request: HttpRequest) -> str:
    """The raw API key of the Authorization header, or the 401 for a missing one."""
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise ApiError(401, "unauthenticated", "Send your API key as 'Authorization: Bearer <key>'.")
    return raw.strip()


def authenticate(request: HttpRequest) -> ApiKey:
    raw = _bearer(request)
    try:
        key = ApiKey.objects.select_related("agent").get(digest=hash_key(raw))
    except ApiKey.DoesNotExist:
        raise ApiError(401, "unauthenticated", "Unknown API key.") from None
    if key.revoked_at is not None:
        raise ApiError(401, "unauthenticated", "This API key has been revoked.")
    _used(key)
    return key


def _used(key: ApiKey) -> None:
    """Note the key's use (at most every LAST_USED_RESOLUTION) and count it against the rate limit."""
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    _rate_limit(key)


def _rate_limit(key: ApiKey) -> None:
    limit = settings.OVERSIGHT_RATE_LIMIT_PER_MINUTE
    now = time.time()
    minute = int(now // 60)
    try:
        count = _count_this_minute(f"rl:{key.agent_id}:{minute}")
    except Exception:
        # The cache (Redis) is down: count in the database instead, so a limit an
        # agent could lift by knocking out Redis is no limit. Only if that fails too
        # is the request let through: the limiter must not stop agents asking.
        log.warning("Rate limiter cache unavailable; counting in the database", exc_info=True)
        try:
            count = _count_in_database(key.agent_id, minute)
        except DatabaseError:
            log.warning("Rate limiter unavailable; request allowed", exc_info=True)
            return
    if count > limit:
        retry_after = max(1, int(60 - now % 60))
        raise ApiError(
            429, "rate_limited", f"More than {limit} requests this minute; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def _count_this_minute(cache_key: str) -> int:
    """Count one request in a fixed one-minute window; one round trip on Redis."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        full_key = cache.make_and_validate_key(cache_key)
        pipe = _pipeline(cache)
        pipe.incr(full_key)
        pipe.expire(full_key, 70)
        count, _ = pipe.execute()
        return count
    if cache.add(cache_key, 1, timeout=70):
        return 1
    return cache.incr(cache_key)


_pipelines = threading.local()


def _pipeline(cache: RedisCache):
    """A pipeline on the cache's write connection pool for this thread, made once.

    The cache hands out a new client for every call (`get_client`), and a pipeline of
    it copies the client's table of response callbacks (about 170 entries): per request,
    that was most of the rate limit's time outside its round trip. `execute` leaves the
    pipeline empty and gives its connection back to the pool, so it is reused as new."""
    pool = cache._cache._get_connection_pool(True)
    pipe = getattr(_pipelines, "pipe", None)
    if pipe is None or pipe.connection_pool is not pool:
        pipe = cache._cache.get_client(write=True).pipeline(transaction=False)
        _pipelines.pipe = pipe
    return pipe


def _count_in_database(agent_id: int, minute: int) -> int:
    """Count one request in the agent's one-minute window row (an UPDATE … count + 1,
    or the INSERT that starts the window). Old windows are dropped as we go."""
    from django.db import IntegrityError, transaction
    from django.db.models import F

    from oversight.models import RateWindow

    windows = RateWindow.objects.filter(agent_id=agent_id, minute=minute)
    with transaction.atomic():
        if not windows.update(count=F("count") + 1):
            try:
                with transaction.atomic():
                    RateWindow.objects.create(agent_id=agent_id, minute=minute, count=1)
                RateWindow.objects.filter(agent_id=agent_id, minute__lt=minute - 1).delete()
                return 1
            except IntegrityError:  # another request started the window first
                windows.update(count=F("count") + 1)
        return windows.values_list("count", flat=True).get()


def _read_json(request: HttpRequest, *, strict: bool = False):
    """The parsed body, or the ApiError that describes what is wrong with it.

    `strict`: a duplicate member name is an error too (a submission's payload is signed
    over by digest, so it must mean one thing)."""
    content_type = request.content_type or ""
    if content_type != "application/json":
        return ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    length = request.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > schemas.MAX_BODY_BYTES:
        return _too_large()
    try:
        body = request.body
    except Exception:
        return _too_large()
    if len(body) > schemas.MAX_BODY_BYTES:
        return _too_large()
    try:
        return jsontext.loads(body.decode("utf-8"), strict=strict)
    except jsontext.Invalid as invalid:
        return validation_error(invalid.details)
    except (UnicodeDecodeError, jsontext.Malformed) as exc:
        return ApiError(400, "malformed_json", f"The body is not valid JSON: {_short(exc)}")


def _too_large() -> ApiError:
    return ApiError(413, "payload_too_large", f"The body is over {schemas.MAX_BODY_BYTES // 1024} KiB.")


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:200]


def _validated(parsed, schema):
    """The body as `schema`, or the ApiError for a body that is not JSON, not an object, or not valid.
    Called after authentication, so a bad body never hides a bad key."""
    if isinstance(parsed, ApiError):
        raise parsed
    if not isinstance(parsed, dict):
        raise validation_error({"body": ["must be a JSON object"]})
    try:
        return schema.model_validate(parsed)
    except ValidationError as error:
        raise validation_error(_details(error)) from None


def _details(error: ValidationError) -> dict[str, list[str]]:
    details: dict[str, list[str]] = {}
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        details.setdefault(field, []).append(message)
    return details


def _param(request: HttpRequest, name: str) -> str | None:
    """One query parameter: None when absent; a 400 when empty or given twice."""
    values = request.GET.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise validation_error({name: ["must be given at most once"]})
    if values[0] == "":
        raise validation_error({name: ["must not be empty"]})
    if "\x00" in values[0]:
        raise validation_error({name: ["must not contain a NUL character"]})
    return values[0]


_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


def _int_param(request: HttpRequest, name: str, low: int, high: int) -> int | None:
    raw = _param(request, name)
    if raw is None:
        return None
    # ASCII digits only: int() would also take " 5", "+5", "1_0" and other scripts' digits.
    if not _WHOLE_NUMBER.fullmatch(raw) or not low <= int(raw) <= high:
        raise validation_error({name: [f"must be a whole number from {low} to {high}"]})
    return int(raw)


def _wait_seconds(request: HttpRequest) -> int:
    return _int_param(request, "wait", 0, schemas.MAX_WAIT_SECONDS) or 0


def _get_for_agent(key: ApiKey, request_id) -> OversightRequest:
    try:
        req = OversightRequest.objects.select_related("agent").get(id=request_id, agent_id=key.agent_id)
    except (OversightRequest.DoesNotExist, DjangoValidationError, ValueError):
        raise not_found() from None
    return actions.apply_timeout_if_due(req)


# --- Long-poll ------------------------------------------------------------------


# How long after the deadline (by the database's clock) a waiter reads the request
# again: SQLite's clock and the event loop's timers have millisecond resolution.
DEADLINE_SLACK = 0.002


async def _wait_for_decision(request_id, deadline: datetime | None, seconds: int) -> dict | None:
    """Wait up to `seconds` for the request to be decided; returns the fresh resource,
    or None when nothing changed. Woken by the decision's broadcast, not by polling.

    The waiter knows the deadline, so it does not wait for someone else to apply it:
    at the deadline (by the database's clock, spec §9.1: the seconds left are read in
    the same query as the row, so this node's clock only measures the interval) it
    reads the request again, which applies the timeout through the same claim as every
    other path (`apply_timeout_if_due`: decided once, whoever wins; a claim in flight
    is waited for), and answers at once. Should the database not judge it due yet,
    it waits again for what is left."""
    layer = get_channel_layer()
    group = request_group(request_id)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    receiving = None
    try:
        # Subscribed first, then look again: a decision committed in between is not missed.
        req, due = await _in_thread(_reload_timed, request_id)
        if req["status"] != Status.PENDING:
            return req
        end = time.monotonic() + seconds
        early = 0  # reads that found the deadline not yet passed: each waits twice as long
        while True:
            due_at = None if deadline is None or due is None else due + DEADLINE_SLACK * 2 ** min(early, 10)
            wake = end if due_at is None else min(end, due_at)
            if receiving is None:
                receiving = asyncio.ensure_future(layer.receive(channel))
            # Not cancelled at the deadline: the push may still be the answer's source.
            await asyncio.wait({receiving}, timeout=max(0.0, wake - time.monotonic()))
            at_deadline = not receiving.done()
            if not at_deadline:
                message, receiving = receiving.result(), None
                decided = _decided_resource(message)
                if decided is not None:
                    # The push carries the resource as committed: no need to read it again.
                    return decided
            elif due_at is None or due_at > end:
                break  # the wait ran out before the deadline
            # The deadline, or another event on the request: read it (applying the
            # timeout if it is due).
            req, due = await _in_thread(_claim_then_reload if at_deadline else _reload_timed, request_id)
            if req["status"] != Status.PENDING or time.monotonic() >= end:
                return req
            early += at_deadline
        return await _in_thread(_reload, request_id)
    finally:
        released = False  # a cancelled receive releases the channel itself
        if receiving is not None:
            receiving.cancel()
            try:
                await receiving
            except asyncio.CancelledError:
                released = True
            except Exception:  # noqa: S110 - the layer's failure was already handled above
                pass
        await layer.group_discard(group, channel)
        if not released:
            await forget_channel(layer, channel)


def _decided_resource(message: dict) -> dict | None:
    try:
        event = json.loads(message["text"])
    except (KeyError, TypeError, ValueError):
        return None
    if event.get("type") != "request.decided":
        return None
    resource = event.get("request")
    return resource if isinstance(resource, dict) and resource.get("status") != Status.PENDING else None


def _reload(request_id) -> dict:
    return _reload_timed(request_id)[0]


def _claim_then_reload(request_id) -> tuple[dict, float | None]:
    """At the deadline: on PostgreSQL the claim first, which decides the request when the
    database judges it due and no one else did (a claim in flight is waited for), then
    a read only when it did not; a read first would be a round trip more on the usual
    path. On SQLite a claim that finds nothing due still takes the write lock, so there
    the read comes first."""
    if connection.vendor == "postgresql":
        claimed = actions.claim_timeouts(ids=[request_id], limit=1)
        if claimed:
            return request_dict(claimed[0]), None
    return _reload_timed(request_id)


def _reload_timed(request_id) -> tuple[dict, float | None]:
    """The resource, and when its deadline falls on this process's `time.monotonic()`
    clock (None without a deadline): the seconds left by the database's clock, read in the
    same query, counted from when that query returned, not from when the caller
    resumes (a busy event loop or thread pool would push the deadline later)."""
    req = OversightRequest.objects.select_related("agent").annotate(database_now=DatabaseNow()).get(id=request_id)
    at = time.monotonic()
    due = None if req.deadline is None else at + max(0.0, (req.deadline - req.database_now).total_seconds())
    return request_dict(actions.apply_timeout_if_due(req, database_now=req.database_now)), due


LONG_POLL_DB_INTERVAL = 0.5  # seconds between database reads when pushes cannot be heard


async def _poll_for_decision(request_id, deadline: datetime | None, seconds: float) -> dict:
    """The long-poll without the channel layer (Redis down): read the database every
    LONG_POLL_DB_INTERVAL until the request is decided, the deadline passes (the read
    then applies the timeout) or the wait ends — never answering at once, which would
    make a plain client spin."""
    end = time.monotonic() + seconds
    req, due = await _in_thread(_reload_timed, request_id)
    if deadline is not None and due is not None:
        end = min(end, due + 0.05)
    while (remaining := end - time.monotonic()) > 0 and req["status"] == Status.PENDING:
        await asyncio.sleep(min(LONG_POLL_DB_INTERVAL, remaining))
        req = await _in_thread(_reload, request_id)
    return req


async def _maybe_wait(resource: dict, wait: int) -> dict:
    if wait <= 0 or resource["status"] != Status.PENDING:
        return resource
    deadline = parse_datetime(resource["deadline"]) if resource["deadline"] else None
    end = asyncio.get_running_loop().time() + wait
    try:
        fresh = await _wait_for_decision(resource["id"], deadline, wait)
    except DatabaseError:
        raise
    except Exception:
        # The channel layer is away: keep the promise of the wait by watching the database.
        log.warning("Long-poll cannot hear pushes; watching the database instead", exc_info=True)
        fresh = await _poll_for_decision(resource["id"], deadline, end - asyncio.get_running_loop().time())
    return fresh or resource


# --- Endpoints ------------------------------------------------------------------


@api_view("GET", "POST", query={"GET": ("status", "operation", "limit", "cursor"), "POST": ("wait",)})
async def requests_collection(request: HttpRequest):
    if request.method == "POST":
        return await submit(request)
    return await list_requests(request)


async def submit(request: HttpRequest):
    parsed = _read_json(request, strict=True)
    header_key = request.headers.get("Idempotency-Key")
    wait = _wait_seconds(request)
    status, resource = await _in_thread(_submit, request, parsed, header_key)
    resource = await _maybe_wait(resource, wait)
    return JsonResponse(resource, status=status)


def _submit(request: HttpRequest, parsed, header_key: str | None) -> tuple[int, dict]:
    raw_key = _bearer(request)
    try:
        body = _validated(parsed, schemas.SubmitRequest)
        if body.payload is not None and jsontext.serialized_size(body.payload) > schemas.MAX_PAYLOAD_BYTES:
            raise ApiError(413, "payload_too_large",
                           f"payload is over {schemas.MAX_PAYLOAD_BYTES // 1024} KiB serialized.")
        if problems := jsontext.integer_problems(body.payload):  # its size was judged just above
            raise validation_error(problems)
    except ApiError:
        authenticate(request)  # a bad body never hides a bad key
        raise
    payload = body.payload or {}
    now = timezone.now()
    payload_sha256 = receipts.payload_digest(payload)
    # The key, the policies, the reject cooldown and the signing key: one read.
    read = submitread.read(hash_key(raw_key), body.operation, payload_sha256, now)
    if read.key is None:
        message = "This API key has been revoked." if read.revoked else "Unknown API key."
        raise ApiError(401, "unauthenticated", message)
    key = read.key
    _used(key)
    idempotency_key = body.idempotency_key
    if header_key is not None:
        if idempotency_key is not None and idempotency_key != header_key:
            raise validation_error({"idempotency_key": ["differs from the Idempotency-Key header"]})
        if not 1 <= len(header_key) <= 200:
            raise validation_error({"Idempotency-Key": ["must be 1–200 characters"]})
        if "\x00" in header_key:
            raise validation_error({"Idempotency-Key": ["must not contain a NUL character"]})
        idempotency_key = header_key
    if body.callback_url:
        from oversight.callbacks import url_allowed

        if not url_allowed(body.callback_url):
            raise validation_error({"callback_url": ["this host is not on the callback allow-list"]})
    submission = actions.Submission(
        operation=body.operation,
        summary=body.summary,
        payload=payload,
        metrics=body.metrics.as_dict() if body.metrics else {},
        timeout_seconds=body.timeout_seconds,
        callback_url=body.callback_url or "",
        idempotency_key=idempotency_key,
    )
    try:
        req, created = actions.do_submit(
            key.agent, submission, api_key=key, now=now, read=read, payload_sha256=payload_sha256
        )
    except actions.IdempotencyConflict:
        raise ApiError(
            409, "idempotency_conflict", "This idempotency key was already used with a different body."
        ) from None
    except actions.SubmissionInvalid as invalid:
        raise validation_error(invalid.details) from None
    except actions.OperationNotAllowed as refused:
        raise ApiError(403, "forbidden", str(refused)) from None
    except actions.TooManyPending as full:
        raise ApiError(
            429, "too_many_pending",
            f"This agent already has {full.limit} pending requests; retry in {full.retry_after} s.",
            headers={"Retry-After": str(full.retry_after)},
        ) from None
    if not created:
        req = actions.apply_timeout_if_due(req)
    return (201 if created else 200), request_dict(req)


async def list_requests(request: HttpRequest):
    return JsonResponse(await _in_thread(_list, request))


def _list(request: HttpRequest) -> dict:
    key = authenticate(request)
    # Before the status filter runs: `?status=pending` must not show an overdue request.
    actions.expire_overdue()
    errors: dict[str, list[str]] = {}
    queryset = OversightRequest.objects.select_related("agent").filter(agent_id=key.agent_id)
    status = _param(request, "status")
    if status is not None:
        if status not in Status.values:
            errors["status"] = [f"must be one of {', '.join(Status.values)}"]
        queryset = queryset.filter(status=status)
    operation = _param(request, "operation")
    if operation is not None:
        queryset = queryset.filter(operation=operation)
    limit = _int_param(request, "limit", 1, 100) or 50
    cursor = _param(request, "cursor")
    if cursor is not None:
        position = _decode_cursor(cursor)
        if position is None:
            errors["cursor"] = ["is not a cursor this API gave out"]
        else:
            created_at, last_id = position
            queryset = queryset.filter(created_at__lte=created_at).exclude(created_at=created_at, id__gte=last_id)
    if errors:
        raise validation_error(errors)
    rows = list(queryset.order_by("-created_at", "-id")[: limit + 1])
    page = actions.apply_timeouts_if_due(rows[:limit])
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return {"results": [request_dict(r) for r in page], "next_cursor": next_cursor}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _encode_cursor(req: OversightRequest) -> str:
    """`<created_at in µs since 1970>-<id hex>`: a position in the newest-first order.
    Any string of this shape (schemas.CURSOR_PATTERN) is a position, so the published
    pattern is exactly what the API accepts."""
    return f"{(req.created_at - _EPOCH) // _MICROSECOND}-{req.id.hex}"


def _decode_cursor(cursor: str):
    if not re.fullmatch(schemas.CURSOR_PATTERN, cursor):
        return None
    micros, _, hex_id = cursor.partition("-")
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex_id)


@api_view("GET", query={"GET": ("wait",)})
async def request_detail(request: HttpRequest, request_id):
    wait = _wait_seconds(request)
    resource = await _in_thread(_detail, request, request_id)
    return JsonResponse(await _maybe_wait(resource, wait))


def _detail(request: HttpRequest, request_id) -> dict:
    key = authenticate(request)
    return request_dict(_get_for_agent(key, request_id))


@api_view("POST")
async def cancel(request: HttpRequest, request_id):
    return JsonResponse(await _in_thread(_cancel, request, request_id))


def _cancel(request: HttpRequest, request_id) -> dict:
    key = authenticate(request)
    req = _get_for_agent(key, request_id)
    try:
        req = actions.do_cancel(key.agent, req.id)
    except actions.AlreadyDecided as lost:
        raise already_decided(lost.request) from None
    return request_dict(req)


@api_view("GET")
async def receipt(request: HttpRequest, request_id):
    return JsonResponse(await _in_thread(_receipt, request, request_id))


def _receipt(request: HttpRequest, request_id) -> dict:
    key = authenticate(request)
    req = _get_for_agent(key, request_id)
    if req.status == Status.PENDING:
        raise ApiError(409, "not_decided", "The request is still pending: there is no decision to sign yet.")
    return {"receipt": receipts.fresh_receipt(req)}


@api_view("GET")
async def keys(request: HttpRequest):
    """The public keys that verify receipts, as a JWKS. No authentication."""
    response = JsonResponse({"keys": await _in_thread(receipts.published_keys)})
    response["Cache-Control"] = "public, max-age=60"
    return response


def already_decided(req: OversightRequest) -> ApiError:
    who = req.decided_by or req.decision_source
    return ApiError(
        409, "already_decided", f"The request is already {req.status} (by {who}).",
        {"request": request_dict(req)},
    )


@api_view("POST")
async def push_metrics(request: HttpRequest):
    parsed = _read_json(request)
    accepted = await _in_thread(_push_metrics, request, parsed)
    return JsonResponse({"accepted": accepted}, status=202)


def _push_metrics(request: HttpRequest, parsed) -> int:
    key = authenticate(request)
    body = _validated(parsed, schemas.MetricsPush)
    from monitoring.ingest import store_agent_samples

    host = body.host
    # Samples of an agent with bound hosts are always attributed to its own hosts.
    if key.agent.hosts and host not in key.agent.hosts:
        raise validation_error({"host": ["is not one of this agent's bound hosts"]})
    samples = [s.model_dump() | {"at": schemas.sample_time(s.at) if s.at else None} for s in body.samples]
    return store_agent_samples(key.agent, host, samples)


@api_view("GET")
async def openapi(request: HttpRequest):
    from oversight.api.openapi import document

    return JsonResponse(document())
