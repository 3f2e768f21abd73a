"""The cache shares Redis with the Celery broker and the channel layer.

Django's RedisCache.clear() is FLUSHDB: it would drop queued tasks (the broker's
lists) along with the cache. This one deletes only the cache's own keys (its
KEY_PREFIX), so clearing the cache never touches the others. The broker's keys
(`celery`, `_kombu.*`, `unacked*`) and the channel layer's pub/sub channels
(named from CHANNEL_PREFIX; pub/sub is not stored in any database) stay.
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache


class PrefixedRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        if not self.key_prefix:
            raise ValueError("PrefixedRedisCache needs a KEY_PREFIX: it is what clear() deletes.")

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
