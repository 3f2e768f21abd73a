"""RFC 8785 canonical JSON (the JSON Canonicalization Scheme) and the payload digest.

The digest in a decision receipt is over this serialization, so the component that runs
an operation can check that the payload it is about to use is the one that was approved.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal

MAX_SAFE_INTEGER = 2**53  # beyond it, JSON numbers are not exact in every language


def canonical_json(value) -> bytes:
    """The JSON Canonicalization Scheme (RFC 8785) serialization of `value`, as UTF-8."""
    return "".join(_jcs(value)).encode("utf-8")


def payload_digest(payload) -> str:
    """Hex SHA-256 of the canonical JSON of `payload` (`{}` when there is none)."""
    return hashlib.sha256(canonical_json(payload if payload is not None else {})).hexdigest()


def _jcs(value):
    if value is None:
        yield "null"
    elif value is True:
        yield "true"
    elif value is False:
        yield "false"
    elif isinstance(value, int):
        if abs(value) <= MAX_SAFE_INTEGER:
            yield str(value)
        elif _written_double(value):
            # A double's shortest decimal digits, read back as an integer: PostgreSQL's
            # jsonb returns 3.27e16 as 32700853891907256 and 1e300 as 1 and 300 zeros.
            # The same number, so the same text.
            yield _number(float(value))
        else:
            raise ValueError(f"integer {value} is beyond ±2^53")
    elif isinstance(value, float):
        yield _number(value)
    elif isinstance(value, str):
        yield _string(value)
    elif isinstance(value, list | tuple):
        yield "["
        for n, item in enumerate(value):
            if n:
                yield ","
            yield from _jcs(item)
        yield "]"
    elif isinstance(value, dict):
        yield "{"
        # Members sorted by their names' UTF-16 code units, as RFC 8785 §3.2.3 says.
        for n, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if not isinstance(key, str):
                raise TypeError("object keys must be strings")
            if n:
                yield ","
            yield _string(key)
            yield ":"
            yield from _jcs(value[key])
        yield "}"
    else:
        raise TypeError(f"not JSON: {type(value).__name__}")


def _written_double(value: int) -> bool:
    """Whether `value` is exactly the shortest decimal form of a double (and so came
    from one): 2^53 + 1 or 2^60 written as integers are not."""
    try:
        return int(Decimal(repr(float(value)))) == value
    except OverflowError:
        return False


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
            "\t": "\\t"}


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    """ECMAScript's Number.prototype.toString of a double (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(value):
        raise ValueError("NaN and Infinity are not JSON")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, as ECMAScript requires.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    n = len(digits) + exponent  # value = 0.digits * 10^n
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    fraction = "." + digits[1:] if k > 1 else ""
    return f"{sign}{digits[0]}{fraction}e{'+' if e > 0 else '-'}{abs(e)}"
