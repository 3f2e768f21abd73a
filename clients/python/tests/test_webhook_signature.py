import hashlib
import hmac
import json

from oversight_client import verify_signature

API_KEY = "ovs_live_5f0c2a9d4e7b41d3a8c6"
BODY = json.dumps({"id": "6f1c", "status": "approved"}).encode()


def header_for(body, api_key):
    # Written out from the spec rather than through the SDK, so both sides are checked.
    secret = hashlib.sha256(api_key.encode()).hexdigest().encode()
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_it_accepts_the_servers_signature():
    assert verify_signature(BODY, header_for(BODY, API_KEY), API_KEY)


def test_it_accepts_upper_case_hex_and_surrounding_space():
    header = header_for(BODY, API_KEY)
    assert verify_signature(BODY, "  sha256=" + header[7:].upper() + " ", API_KEY)


def test_it_rejects_a_changed_body():
    header = header_for(BODY, API_KEY)
    assert not verify_signature(BODY.replace(b"approved", b"rejected"), header, API_KEY)


def test_it_rejects_another_agents_key():
    assert not verify_signature(BODY, header_for(BODY, "someone-else"), API_KEY)


def test_it_rejects_a_signature_keyed_with_the_raw_key():
    raw = "sha256=" + hmac.new(API_KEY.encode(), BODY, hashlib.sha256).hexdigest()
    assert not verify_signature(BODY, raw, API_KEY)


def test_it_rejects_malformed_headers():
    digest = header_for(BODY, API_KEY)[7:]
    for header in ("", digest, "sha1=" + digest, "sha256=", "sha256=zz"):
        assert not verify_signature(BODY, header, API_KEY), header
