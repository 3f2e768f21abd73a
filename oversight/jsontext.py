"""JSON text as the service reads it, wherever it comes from: an agent's body, or the
payload an operator edits on the request's page.

One parser, so that a payload an operator writes is held to exactly what a submission's
payload is: no NaN or Infinity (nor `1e999`), no unpaired surrogate, no NUL (PostgreSQL
stores neither in text or jsonb), with `strict` no duplicate member name, and — for a
payload — no integer beyond ±2^53 and at most 64 KiB serialized, so that its RFC 8785
digest means one thing.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata

from oversight import receipts
from oversight.api.schemas import MAX_PAYLOAD_BYTES

# Text longer than this is not parsed at all (a body's limit; a payload's text may be indented).
MAX_TEXT_BYTES = 256 * 1024


class Malformed(ValueError):
    """Not JSON at all (syntax, NaN/Infinity, a non-finite number)."""


class Invalid(ValueError):
    """JSON, but holding what no stored field can: `details` is `{field: [why]}`."""

    def __init__(self, details: dict[str, list[str]]):
        super().__init__("; ".join(f"{field}: {', '.join(why)}" for field, why in details.items()))
        self.details = details


def loads(text: str, *, strict: bool = False, field: str = "body"):
    """Parse `text`; raises Malformed, or Invalid naming `field`.

    `strict`: a duplicate member name is an error too (a payload is signed over by
    digest, so it must mean one thing)."""
    try:
        hook = receipts.no_duplicate_keys if strict else None
        parsed = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=hook)
    except receipts.DuplicateKey as exc:
        raise Invalid({field: [f"{exc}: every member name must be unique"]}) from None
    except (ValueError, RecursionError) as exc:
        raise Malformed(_short(exc)) from None
    if _ESCAPED_SURROGATE.search(text) and _has_lone_surrogate(parsed):
        raise Invalid({field: ["contains an unpaired UTF-16 surrogate (\\ud800–\\udfff)"]})
    if _ESCAPED_NUL.search(text) and _has_nul_safely(parsed):
        raise Invalid({field: ["contains a NUL character (\\u0000), which no text field can hold"]})
    return parsed


def payload_problems(payload, field: str = "payload") -> dict[str, list[str]]:
    """What makes a parsed payload unfit to store and sign (empty when it is fit)."""
    if payload is None:
        return {}
    if serialized_size(payload) > MAX_PAYLOAD_BYTES:
        return {field: [f"is over {MAX_PAYLOAD_BYTES // 1024} KiB serialized"]}
    return integer_problems(payload, field)


def integer_problems(payload, field: str = "payload") -> dict[str, list[str]]:
    """Integers a payload holds beyond ±2^53, by path (RFC 8785 cannot sign them exactly)."""
    unsafe = receipts.unsafe_integers(payload, field)
    return {path: ["integers must be within ±2^53 (send larger ones as strings)"] for path in unsafe}


def serialized_size(value) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # `1e999` is valid JSON syntax but no finite number: refuse it like NaN.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


# A surrogate can only reach a parsed string through a \uD800–\uDFFF escape, so the
# full walk runs only for texts that contain one (a pair is fine; a lone one is not
# text and no database stores it).
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")

# A JSON string can only carry a NUL escaped.
_ESCAPED_NUL = re.compile(r"\\u0000")


def _has_nul_safely(value) -> bool:
    try:
        return _has_nul(value)
    except RecursionError:
        return True  # nested past any sensible depth: refused either way


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _has_lone_surrogate(value) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:200]


# What a person cannot see, or sees act on other text: controls, formats (the
# right-to-left override U+202E, zero-width spaces, tags), line and paragraph separators,
# and private-use or unassigned code points.
_UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn", "Zl", "Zp"})


def shown(value) -> str:
    """`value` as JSON text for a person to read (and edit): indented, keys sorted, and
    every character they could not see for what it is written as its `\\uXXXX` escape,
    so that what the page shows is what runs (Trojan Source) and parses back unchanged."""
    return visible(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def visible(text: str) -> str:
    """Plain text an agent wrote (a summary, a metric's name), with every character a
    person could not see for what it is written as its `\\uXXXX` escape."""
    return "".join(_escaped(char) if _unseen(char) else char for char in text)


def _unseen(char: str) -> bool:
    return char != "\n" and unicodedata.category(char) in _UNSEEN_CATEGORIES


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
