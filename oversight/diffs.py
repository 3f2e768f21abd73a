"""What an operator changed in a payload, as a list the audit trail keeps."""

from __future__ import annotations

from typing import Any

_MISSING = object()


def json_changes(before: Any, after: Any, path: str = "") -> list[dict]:
    """The changes from `before` to `after`: `{"op": "add"|"remove"|"replace", "path", "from"?, "to"?}`.

    Paths are JSON Pointers (RFC 6901). Objects are compared key by key; anything else
    (lists included) that differs is one replacement, which keeps the record readable.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in sorted(before.keys() | after.keys()):
            child = f"{path}/{_escape(key)}"
            old, new = before.get(key, _MISSING), after.get(key, _MISSING)
            if old is _MISSING:
                changes.append({"op": "add", "path": child, "to": new})
            elif new is _MISSING:
                changes.append({"op": "remove", "path": child, "from": old})
            else:
                changes += json_changes(old, new, child)
        return changes
    if before == after and type(before) is type(after):
        return []
    return [{"op": "replace", "path": path or "/", "from": before, "to": after}]


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")
