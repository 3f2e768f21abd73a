"""Outgoing HTTP for deliveries, checked on the address actually connected to.

A host name is resolved once; every address it resolves to is checked against the
address rules, and the connection goes to that checked address (with the original
Host header and TLS server name), so a name that re-resolves elsewhere between the
check and the connection (DNS rebinding) cannot slip past.

The rules: link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, and
IPv4 addresses mapped or embedded in IPv6) are always refused; with
OVERSIGHT_PRODUCTION=1 also loopback, private, reserved, multicast and unspecified
addresses. Hosts named in OVERSIGHT_CALLBACK_ALLOWED_HOSTS are exempt from the
production rules. Redirects are never followed (a 3xx is an answer like any other).

An attempt has one overall time limit (connect, send, and read together): a receiver
that trickles its answer is cut off at the limit. At most 64 KiB of the answer is read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna
from django.conf import settings

MAX_ANSWER_BYTES = 64 * 1024
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


class Refused(Exception):
    """The delivery must not be attempted (or retried): the reason is short and safe to audit."""


class Skipped(Exception):
    """Nothing to send any more (e.g. a reminder for a request decided meanwhile)."""


class AttemptFailed(Exception):
    """The attempt failed in a way worth retrying; the reason is short and safe to audit."""


@dataclass
class Answer:
    status: int
    body: bytes


def ascii_host(host: str) -> str:
    """The host as it goes on the wire (IDNA 2008), or Refused for a host that has none."""
    host = host.strip().rstrip(".").lower()
    if not host:
        raise Refused("no host")
    if _literal_ip(host) is not None:
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        raise Refused("invalid host name") from None


def check_url(url: str) -> str:
    """Raise Refused unless `url` is an http(s) URL with a valid host; returns the ASCII host.
    (Addresses are checked when connecting, not here.)"""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 — raises on a bad port
    except ValueError:
        raise Refused("invalid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("not an http(s) URL")
    return ascii_host(parts.hostname)


def host_exempt(host: str) -> bool:
    return host.lower() in {h.strip().lower() for h in settings.OVERSIGHT_CALLBACK_ALLOWED_HOSTS}


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, exempt: bool = False) -> str | None:
    """Why `ip` may not be connected to, or None when it may."""
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]):
            if embedded:
                candidates.append(embedded)
        if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for candidate in candidates:
        if any(candidate in net for net in LINK_LOCAL if net.version == candidate.version):
            return "link-local or metadata address refused"
    if settings.PRODUCTION and not exempt:
        for candidate in candidates:
            if candidate.is_loopback:
                return "loopback address refused"
            if candidate.is_private:
                return "private address refused"
            if candidate.is_reserved or candidate.is_multicast or candidate.is_unspecified:
                return "reserved address refused"
    return None


def _literal_ip(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[tuple]:
    """The checked addresses to connect to: (family, sockaddr) pairs. Raises Refused when
    any address the name resolves to is refused, AttemptFailed when it does not resolve."""
    exempt = host_exempt(host)
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise AttemptFailed("host name not resolved") from None
    addresses = []
    for family, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        reason = address_refusal(ip, exempt=exempt)
        if reason:
            raise Refused(reason)
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise AttemptFailed("host name not resolved")
    return addresses


class _Pinned:
    """http.client connections that use a socket already connected to a checked address."""

    class HTTP(http.client.HTTPConnection):
        def __init__(self, host, port, sock):
            super().__init__(host, port)
            self.sock = sock

        def connect(self):  # never reconnect on its own
            raise http.client.NotConnected()


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float | None = None) -> Answer:
    """POST `body` to `url` under the address rules, within one overall time limit."""
    timeout = timeout if timeout is not None else settings.OVERSIGHT_CALLBACK_TIMEOUT
    host = check_url(url)
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    deadline = time.monotonic() + timeout
    addresses = resolve(host, port)

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AttemptFailed("timed out")
        return left

    sock = None
    reason = "connection failed"
    for family, sockaddr in addresses[:4]:
        candidate = socket.socket(family, socket.SOCK_STREAM)
        try:
            candidate.settimeout(remaining())
            candidate.connect(sockaddr)
            sock = candidate
            break
        except AttemptFailed:
            candidate.close()
            raise
        except OSError as exc:
            candidate.close()
            reason = _reason(exc, deadline)
    if sock is None:
        raise AttemptFailed(reason)

    # The overall limit: whatever the connection is doing at the deadline, it ends.
    def cut() -> None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    timer.daemon = True
    timer.start()
    try:
        if https:
            context = ssl.create_default_context()
            try:
                import certifi

                context.load_verify_locations(certifi.where())
            except ImportError:  # pragma: no cover
                pass
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.settimeout(remaining())
        named = f"[{host}]" if ":" in host else host
        host_header = named if port == (443 if https else 80) else f"{named}:{port}"
        conn = _Pinned.HTTP(host, port, sock)
        conn.putrequest("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), skip_host=True,
                        skip_accept_encoding=True)
        conn.putheader("Host", host_header)
        for name, value in (headers | {"Content-Length": str(len(body)), "Connection": "close"}).items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        answer = response.read(MAX_ANSWER_BYTES)
        remaining()
        return Answer(response.status, answer)
    except AttemptFailed:
        raise
    except (OSError, ValueError, http.client.HTTPException, ssl.SSLError) as exc:
        raise AttemptFailed(_reason(exc, deadline)) from None
    finally:
        timer.cancel()
        try:
            sock.close()
        except OSError:
            pass


def _reason(exc: BaseException, deadline: float) -> str:
    """A short reason for the audit: never the raw error text (it may name internal hosts)."""
    if time.monotonic() >= deadline - 0.01 or isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return "TLS error"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "connection closed by the receiver"
    if isinstance(exc, http.client.HTTPException):
        return "invalid HTTP answer"
    return "connection failed"


# --- Connections opened by libraries (Apprise) --------------------------------------------
#
# Apprise opens its own connections (HTTP with redirects followed, SMTP, each service's own
# host), so its sends cannot use `post`'s pinned socket. Instead every socket.connect made
# by the thread that runs a send is checked, through an audit hook, against the same rules:
# the address actually connected to, whatever the URL said and wherever a redirect led.


class _Rules(threading.local):
    active = False
    exempt_host: str | None = None
    refused: str | None = None


_rules = _Rules()
_hook_lock = threading.Lock()
_hook_installed = False


class ConnectionRefusedByRules(ConnectionRefusedError):
    """Raised inside socket.connect: an OSError, so libraries fail the send as they would
    for a host that refuses; `guarded_connections` then reports the reason."""


def _is_address_of(host: str, ip) -> bool:
    host = host.strip("[]")
    if (literal := _literal_ip(host)) is not None:
        return literal == ip
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return any(ipaddress.ip_address(info[4][0].split("%")[0]) == ip for info in infos)


def _connect_refusal(family: int, address) -> str | None:
    if family not in (socket.AF_INET, socket.AF_INET6):
        return "only internet addresses are allowed"
    host, port = address[0], address[1]
    ip = _literal_ip(str(host).split("%")[0])
    if ip is None:
        # A name handed straight to connect (libraries resolve first): check all it resolves to.
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None  # connect fails on its own
        for _, _, _, _, sockaddr in infos:
            if reason := _connect_refusal(family, sockaddr):
                return reason
        return None
    if (reason := address_refusal(ip)) is None:
        return None
    if reason.startswith("link-local"):
        return reason  # never exempt
    # As for webhooks: an allow-listed host is exempt from the production rules, here
    # for the addresses that host has (not for wherever a redirect leads).
    exempt = _rules.exempt_host
    return None if exempt and _is_address_of(exempt, ip) else reason


def _audit(event: str, args: tuple) -> None:
    if event != "socket.connect" or not _rules.active:
        return
    sock, address = args
    reason = _connect_refusal(sock.family, address)
    if reason:
        _rules.refused = reason
        raise ConnectionRefusedByRules(reason)


def _install_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            # Process-wide and permanent (audit hooks cannot be removed); it acts only in a
            # thread inside `guarded_connections`, and costs one comparison elsewhere.
            sys.addaudithook(_audit)
            _hook_installed = True


@contextlib.contextmanager
def guarded_connections(host: str | None = None):
    """Within the block, this thread's connections obey the address rules; `host` is the
    target's host, exempt from the production rules when allow-listed, as a webhook's
    is. A refused connection fails inside the library; on leaving the block the first
    refusal is raised as Refused (with its reason), whatever the library made of it."""
    _install_hook()
    if _rules.active:  # nested: the outer block reports
        yield
        return
    _rules.active, _rules.refused = True, None
    _rules.exempt_host = host if host and host_exempt(host) else None
    refused = None
    try:
        try:
            yield
        finally:
            refused, _rules.active, _rules.refused, _rules.exempt_host = _rules.refused, False, None, None
    except Exception:
        if refused:
            raise Refused(refused) from None
        raise
    if refused:
        raise Refused(refused)
