"""The cache shares Redis with the Celery broker and the channel layer.

Django's RedisCache.clear() is FLUSHDB: it would drop queued tasks (the broker's
lists) along with the cache. This one deletes only the cache's own keys (its
KEY_PREFIX), so clearing the cache never touches the others. The broker's keys
(`celery`, `_kombu.*`, `unacked*`) and the channel layer's pub/sub channels
(named from CHANNEL_PREFIX; pub/sub is not stored in any database) stay.

Django makes a cache object per request context under ASGI (`caches` is an asgiref
Local), and each one would build its own client, connection pool and TCP connection:
a new connection to Redis for every API request. The client (and so its pool) is
shared by every cache object of the process with the same location and options
instead; the options, such as REDIS_TIMEOUT's socket timeouts, stay in force. The
pool is thread-safe, and redis-py makes a fresh one in a forked child.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property

_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


class PrefixedRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        if not self.key_prefix:
            raise ValueError("PrefixedRedisCache needs a KEY_PREFIX: it is what clear() deletes.")

    @cached_property
    def _cache(self):
        key = (self._class, tuple(self._servers), repr(sorted(self._options.items())))
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(self._servers, **self._options)
        return client

    def clear(self) -> bool:
        client = self._cache.get_client(write=True)
        batch = []
        for key in client.scan_iter(match=f"{_glob_escape(self.key_prefix)}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
        return True


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
