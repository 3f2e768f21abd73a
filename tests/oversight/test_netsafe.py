"""The address rules of deliveries, checked on the address actually connected to."""

import ipaddress
import socket
import time

import pytest

from oversight import actions, deliveries, netsafe
from oversight.models import AuditEvent, Delivery, OversightRequest, Source, Status
from tests.receiver import Receiver


def _refusal(url, settings, production=False):
    settings.PRODUCTION = production
    try:
        netsafe.post(url, b"{}", {}, timeout=2)
    except netsafe.Refused as exc:
        return str(exc)
    except netsafe.AttemptFailed as exc:
        return f"attempted: {exc}"
    return "sent"


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",  # 169.254.169.254 as one integer
    "http://0xa9.0xfe.0xa9.0xfe/",  # and in hex
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/",
])
def test_it_always_refuses_link_local_and_metadata_addresses(url, settings):
    assert _refusal(url, settings) == "link-local or metadata address refused"


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:9/", "loopback address refused"),
    ("http://[::1]:9/", "loopback address refused"),
    ("http://10.1.2.3/", "private address refused"),
    ("http://192.168.0.1/", "private address refused"),
    ("http://[::ffff:10.0.0.1]/", "private address refused"),
    ("http://localhost:9/", "loopback address refused"),  # a name that resolves to a private address
    ("http://224.0.0.1/", "reserved address refused"),
])
def test_in_production_it_refuses_loopback_private_and_reserved_addresses(url, reason, settings):
    assert _refusal(url, settings, production=True) == reason


def test_outside_production_loopback_is_allowed(settings):
    with Receiver([204]) as receiver:
        assert _refusal(receiver.url, settings) == "sent"


def test_the_allowed_hosts_are_exempt_from_the_production_rules_not_the_link_local_one(settings):
    settings.OVERSIGHT_CALLBACK_ALLOWED_HOSTS = ["localhost", "169.254.169.254"]
    with Receiver([204]) as receiver:
        assert _refusal(receiver.url.replace("127.0.0.1", "localhost"), settings, production=True) == "sent"
    assert _refusal("http://169.254.169.254/", settings, production=True) == "link-local or metadata address refused"


def test_it_connects_to_the_address_it_checked_not_a_second_lookup(settings, monkeypatch):
    """DNS rebinding: the first answer is checked and connected to; a name that would
    answer differently the second time never gets a second lookup."""
    settings.PRODUCTION = False
    real = socket.getaddrinfo
    answers = []

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.test":  # a name server outside the system: first public-looking, then metadata
            address = "127.0.0.1" if not answers else "169.254.169.254"
            answers.append(address)
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with Receiver([204]) as receiver:
        port = receiver.server.server_address[1]
        answer = netsafe.post(f"http://rebind.test:{port}/hook", b"{}", {}, timeout=2)
    assert answer.status == 204 and answers == ["127.0.0.1"]
    headers, _ = receiver.received[0]
    assert headers["host"] == f"rebind.test:{port}"


def test_it_never_follows_a_redirect(settings):
    with Receiver([200]) as target, Receiver([302], location=None) as redirecting:
        redirecting.location = target.url
        answer = netsafe.post(redirecting.url, b"{}", {}, timeout=2)
    assert answer.status == 302 and target.received == []


def test_an_attempt_has_one_overall_time_limit_against_a_trickling_receiver():
    with Receiver([200], trickle=0.4) as receiver:
        started = time.monotonic()
        with pytest.raises(netsafe.AttemptFailed, match="timed out"):
            netsafe.post(receiver.url, b"{}", {}, timeout=1.5)
        assert time.monotonic() - started < 2.5


def test_an_attempt_reads_at_most_64_kib_of_an_endless_answer():
    """The receiver streams its answer for ever: the attempt takes 64 KiB of it and ends
    (reading on would run into the overall time limit and fail the attempt)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def answer_for_ever():
        conn, _ = server.accept()
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            while not stop.is_set():
                conn.sendall(b"x" * 8192)
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=answer_for_ever, daemon=True)
    thread.start()
    try:
        answer = netsafe.post(f"http://127.0.0.1:{server.getsockname()[1]}/", b"{}", {}, timeout=5)
    finally:
        stop.set()
        server.close()
    assert answer.status == 200 and 0 < len(answer.body) <= 64 * 1024


@pytest.mark.parametrize("host", ["☃.com", "xn--.com", "a..b", "-bad-.com"])
def test_idna_invalid_hosts_are_refused(host):
    with pytest.raises(netsafe.Refused):
        netsafe.check_url(f"http://{host}/")


def test_embedded_ipv4_in_ipv6_is_checked():
    assert netsafe.address_refusal(ipaddress.ip_address("::ffff:169.254.169.254"))
    assert netsafe.address_refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))
    assert netsafe.address_refusal(ipaddress.ip_address("93.184.216.34")) is None


@pytest.mark.django_db(transaction=True)
def test_it_answers_400_for_an_idna_invalid_callback_host(client, agent):
    from tests.oversight.api_helpers import submit

    response = submit(client, agent, callback_url="http://☃.com/")
    assert response.status_code == 400
    assert "callback_url" in response.json()["error"]["details"]


@pytest.mark.django_db
def test_a_refused_callback_is_audited_failed_with_the_reason(agent):
    req, _ = actions.do_submit(
        agent.agent,
        actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, callback_url="http://2852039166/hook"),
        api_key=agent.agent.keys.get(),
    )
    actions.do_decide(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    delivery = Delivery.objects.get(key=f"callback:{req.id}")
    assert deliveries.handle_one_delivery(str(delivery.pk)) is None
    failure = AuditEvent.objects.get(request=req, kind="callback_failed")
    assert failure.data["error"] == "link-local or metadata address refused" and failure.data["final"] is True
    delivery.refresh_from_db()
    assert delivery.state == "failed"


@pytest.mark.django_db
def test_a_target_that_became_invalid_is_audited_failed_not_a_crash(agent):
    req, _ = actions.do_submit(
        agent.agent,
        actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, callback_url="http://ok.test/hook"),
        api_key=agent.agent.keys.get(),
    )
    OversightRequest.objects.filter(id=req.id).update(callback_url="http://☃.com/")
    actions.do_decide(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    delivery = Delivery.objects.get(key=f"callback:{req.id}")
    assert deliveries.handle_one_delivery(str(delivery.pk)) is None
    failure = AuditEvent.objects.get(request=req, kind="callback_failed")
    assert failure.data["error"] == "invalid host name"
