"""Signed decision receipts: the JWS on every final decision, JWKS, rotation, verification."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta

import jwt
import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.db import close_old_connections
from django.test import override_settings
from django.utils import timezone
from oversight_client import ReceiptInvalid, verify_receipt
from oversight_client.canonical import canonical_json as sdk_canonical_json

from oversight import actions, receipts
from oversight.models import OversightRequest, Policy, SigningKey, Source, Status
from tests.conftest import past_deadline
from tests.oversight.api_helpers import error_code, get, post, submit

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "http://testserver.example"
CALM = {"memory_pressure": 10, "delegation_depth": 0, "circular_refs": 0}
DEEP = {"memory_pressure": 10, "delegation_depth": 5, "circular_refs": 0}
PAYLOAD = {"path": "/etc/app.yaml", "lines": [1, 2.5, None], "note": "é€😀"}


@pytest.fixture(autouse=True)
def site_url(settings):
    settings.SITE_URL = SITE
    settings.OVERSIGHT_SIGNING_KEY = ""


def jwks(client) -> dict:
    response = client.get("/api/v1/keys")
    assert response.status_code == 200
    return response.json()


def claims_of(receipt: str) -> dict:
    return jwt.decode(receipt, options={"verify_signature": False})


def verify(client, resource: dict, payload=None, **options) -> dict:
    checks = {"operation": resource["operation"], "agent": resource["agent"], "issuer": SITE}
    return verify_receipt(resource["decision"]["receipt"],
                          resource["payload"] if payload is None else payload,
                          jwks(client), **(checks | options))


def pending(client, agent, **fields) -> dict:
    response = submit(client, agent, metrics=DEEP, payload=PAYLOAD, **fields)
    assert response.status_code == 201 and response.json()["status"] == "pending"
    return response.json()


# --- Canonical JSON (RFC 8785) ---------------------------------------------------------

VECTORS = [
    # RFC 8785 §3.2.2 and appendix B's numbers, and its member-sorting example.
    ({"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001]},
     '{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]}'),
    ({"string": "€$\u000f\nA'B\"\\\\\"/"}, '{"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'),
    ({"literals": [None, True, False]}, '{"literals":[null,true,false]}'),
    ({"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
      "\u00f6": "Latin Small Letter O With Diaeresis"},
     '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With '
     'Diaeresis","\u20ac":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter '
     'Dalet With Dagesh"}'),
    ([0.0, -0.0, 1.0, 1e21, 1e20, 1e-6, 1e-7, 5e-324, 1.7976931348623157e308, -1.5, 9007199254740992],
     "[0,0,1,1e+21,100000000000000000000,0.000001,1e-7,5e-324,1.7976931348623157e+308,-1.5,"
     "9007199254740992]"),
]


@pytest.mark.parametrize("canonical", [receipts.canonical_json, sdk_canonical_json],
                         ids=["server", "sdk"])
@pytest.mark.parametrize(("value", "expected"), VECTORS)
def test_it_serializes_canonical_json_as_rfc_8785_says(canonical, value, expected):
    assert canonical(value) == expected.encode("utf-8")


@pytest.mark.parametrize("canonical", [receipts.canonical_json, sdk_canonical_json],
                         ids=["server", "sdk"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**53 + 1, -(2**53) - 1, 2**60, 10**400])
def test_it_refuses_what_has_no_canonical_form(canonical, value):
    with pytest.raises(ValueError):
        canonical({"x": value})


@pytest.mark.parametrize("canonical", [receipts.canonical_json, sdk_canonical_json],
                         ids=["server", "sdk"])
@pytest.mark.parametrize(("whole", "double"), [(32700853891907256, 3.2700853891907256e16),
                                               (-1152921504606847000, -1.152921504606847e18),
                                               (10**22, 1e22), (10**300, 1e300)])
def test_a_whole_double_read_back_as_an_integer_keeps_its_form(canonical, whole, double):
    # PostgreSQL's jsonb hands 3.27e16 back as the integer 32700853891907256.
    assert canonical([whole]) == canonical([double]) == f"[{receipts._number(double)}]".encode()


# --- Submission ----------------------------------------------------------------------


def test_the_resource_carries_the_digest_of_the_payload_as_submitted(client, agent):
    body = pending(client, agent)
    assert body["payload_sha256"] == hashlib.sha256(receipts.canonical_json(PAYLOAD)).hexdigest()
    assert body["decision"] is None


def test_a_request_without_payload_digests_an_empty_object(client, agent):
    body = submit(client, agent, metrics=CALM).json()
    assert body["payload_sha256"] == hashlib.sha256(b"{}").hexdigest()


@pytest.mark.parametrize("number", [2**53 + 1, -(2**53) - 1, 10**30])
def test_an_integer_beyond_2_to_the_53_is_a_400(client, agent, number):
    response = submit(client, agent, metrics=CALM, payload={"a": {"b": [number]}})
    assert response.status_code == 400 and error_code(response) == "validation_error"
    assert "payload.a.b.0" in response.json()["error"]["details"]
    assert not OversightRequest.objects.exists()


def test_integers_up_to_2_to_the_53_are_accepted(client, agent):
    response = submit(client, agent, metrics=CALM, payload={"max": 2**53, "min": -(2**53)})
    assert response.status_code == 201


@pytest.mark.parametrize("body", [
    '{"operation": "deploy", "summary": "x", "payload": {"a": 1, "a": 2}}',
    '{"operation": "deploy", "summary": "x", "summary": "y"}',
    '{"operation": "deploy", "summary": "x", "payload": {"n": [{"k": 1, "k": 1}]}}',
])
def test_duplicate_keys_are_a_400(client, agent, body):
    response = post(client, "/api/v1/requests", agent, data=body)
    assert response.status_code == 400 and error_code(response) == "validation_error"
    assert not OversightRequest.objects.exists()


def test_a_bad_key_is_still_told_before_a_duplicate_key(client):
    response = post(client, "/api/v1/requests", data='{"a": 1, "a": 2}',
                    headers={"Authorization": "Bearer ovs_nope"})
    assert response.status_code == 401


# --- Receipts on decisions -------------------------------------------------------------


def test_a_policy_approval_carries_a_receipt_that_verifies(client, agent):
    body = submit(client, agent, metrics=CALM, payload=PAYLOAD).json()
    claims = verify(client, body)
    assert claims["sub"] == body["id"] and claims["iss"] == SITE
    assert claims["outcome"] == "approved" and claims["source"] == "policy"
    assert claims["approvers"] == [] and claims["grant"] is None and claims["trusted"] is False
    assert claims["policy"] == "*@1"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["payload_sha256"] == body["payload_sha256"]
    header = jwt.get_unverified_header(body["decision"]["receipt"])
    assert header["alg"] == "EdDSA" and header["kid"] == jwks(client)["keys"][0]["kid"]


def test_an_operator_approval_names_the_approver_and_is_made_once(client, agent):
    body = pending(client, agent)
    actions.do_decide(body["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    first = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    again = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    assert first["decision"]["receipt"] == again["decision"]["receipt"]
    claims = verify(client, first, require_human=True)
    assert claims["approvers"] == ["olivia"] and claims["source"] == "operator"


@pytest.mark.parametrize(("outcome", "source"), [
    (Status.REJECTED, Source.OPERATOR), (Status.CANCELLED, Source.AGENT)])
def test_rejections_and_cancels_carry_a_receipt_that_does_not_verify_as_approval(
        client, agent, outcome, source):
    body = pending(client, agent)
    actions.do_decide(body["id"], outcome=outcome, source=source, by="olivia")
    resource = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    claims = claims_of(resource["decision"]["receipt"])
    assert claims["outcome"] == outcome and claims["approvers"] == []
    with pytest.raises(ReceiptInvalid, match="not approved"):
        verify(client, resource)


def test_a_cancel_through_the_api_carries_a_receipt(client, agent):
    body = pending(client, agent)
    response = post(client, f"/api/v1/requests/{body['id']}/cancel", agent, json={})
    assert claims_of(response.json()["decision"]["receipt"])["outcome"] == "cancelled"


def test_a_timeout_approval_is_refused_when_a_person_is_required(client, agent):
    body = pending(client, agent, timeout_seconds=60)
    past_deadline(OversightRequest.objects.get(id=body["id"]))
    resource = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    assert resource["decision"]["source"] == "timeout"
    assert verify(client, resource)["source"] == "timeout"
    with pytest.raises(ReceiptInvalid, match="not a person"):
        verify(client, resource, require_human=True)


def test_a_trusted_agents_approval_is_refused_when_a_person_is_required(client, agent):
    actions.do_change_policy("*", {"trusted_agents": [agent.agent.name]}, by="maria")
    resource = submit(client, agent, metrics=DEEP).json()
    assert verify(client, resource)["trusted"] is True
    with pytest.raises(ReceiptInvalid, match="not a person"):
        verify(client, resource, require_human=True)


# --- GET .../receipt ------------------------------------------------------------------


def test_a_fresh_receipt_is_valid_for_the_policys_ttl(client, agent):
    actions.do_change_policy("*", {"receipt_ttl_seconds": 3600}, by="maria")
    body = pending(client, agent)
    assert get(client, f"/api/v1/requests/{body['id']}/receipt", agent).status_code == 409
    assert error_code(get(client, f"/api/v1/requests/{body['id']}/receipt", agent)) == "not_decided"
    actions.do_decide(body["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    resource = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    response = get(client, f"/api/v1/requests/{body['id']}/receipt", agent)
    assert response.status_code == 200
    fresh = response.json()["receipt"]
    claims = verify(client, resource | {"decision": resource["decision"] | {"receipt": fresh}})
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["jti"] != claims_of(resource["decision"]["receipt"])["jti"]
    assert claims["approvers"] == ["olivia"]


def test_a_large_double_in_the_payload_keeps_its_digest_through_storage(client, agent):
    payload = {"big": 3.2700853891907256e16, "small": -1e22, "huge": 1e300, "fraction": 0.1}
    body = submit(client, agent, metrics=CALM, payload=payload).json()
    stored = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    response = get(client, f"/api/v1/requests/{body['id']}/receipt", agent)
    assert response.status_code == 200
    fresh = response.json()["receipt"]
    assert claims_of(fresh)["payload_sha256"] == body["payload_sha256"] == stored["payload_sha256"]
    verify(client, stored | {"decision": stored["decision"] | {"receipt": fresh}}, payload=payload)
    verify(client, stored)


def test_the_receipt_endpoint_is_the_agents_own(client, agent, other_agent):
    body = submit(client, agent, metrics=CALM).json()
    assert get(client, f"/api/v1/requests/{body['id']}/receipt").status_code == 401
    assert get(client, f"/api/v1/requests/{body['id']}/receipt", other_agent).status_code == 404
    assert get(client, "/api/v1/requests/not-a-uuid/receipt", agent).status_code == 404
    assert post(client, f"/api/v1/requests/{body['id']}/receipt", agent, json={}).status_code == 405


# --- Verification (the SDK's verify_receipt) --------------------------------------------


@pytest.fixture
def approved(client, agent) -> dict:
    return submit(client, agent, metrics=CALM, payload=PAYLOAD, operation="deploy").json()


def test_a_tampered_payload_fails(client, approved):
    with pytest.raises(ReceiptInvalid, match="not the one that was approved"):
        verify(client, approved, payload=PAYLOAD | {"path": "/etc/shadow"})
    # The same data in another key order or spacing is the same payload.
    assert verify(client, approved, payload=json.loads(json.dumps(PAYLOAD, sort_keys=True)))


def test_an_expired_receipt_fails(client, approved):
    with time_machine.travel(timezone.now() + timedelta(seconds=601), tick=False), \
            pytest.raises(ReceiptInvalid, match="expired"):
        verify(client, approved)


def test_an_unknown_key_fails(client, approved):
    other = receipts.public_jwk(Ed25519PrivateKey.generate())
    with pytest.raises(ReceiptInvalid, match="not in the given JWKS"):
        verify_receipt(approved["decision"]["receipt"], approved["payload"], {"keys": [other]},
                       operation="deploy", agent=approved["agent"], issuer=SITE)


def test_a_receipt_signed_by_another_key_under_our_kid_fails(client, approved):
    kid = jwks(client)["keys"][0]["kid"]
    forged = jwt.encode(claims_of(approved["decision"]["receipt"]), Ed25519PrivateKey.generate(),
                        algorithm="EdDSA", headers={"kid": kid})
    with pytest.raises(ReceiptInvalid, match="does not verify"):
        verify(client, approved | {"decision": {"receipt": forged}})


def test_a_receipt_with_its_own_key_in_the_header_fails(client, approved):
    attacker = Ed25519PrivateKey.generate()
    jwk = receipts.public_jwk(attacker)
    forged = jwt.encode(claims_of(approved["decision"]["receipt"]), attacker, algorithm="EdDSA",
                        headers={"kid": jwk["kid"], "jwk": jwk, "jku": "http://127.0.0.1:9/keys"})
    with pytest.raises(ReceiptInvalid, match="not in the given JWKS"):
        verify(client, approved | {"decision": {"receipt": forged}})


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_other_algorithms_are_refused(client, approved, algorithm):
    kid = jwks(client)["keys"][0]["kid"]
    key = jwks(client)["keys"][0]["x"] if algorithm == "HS256" else None
    forged = jwt.encode(claims_of(approved["decision"]["receipt"]), key, algorithm=algorithm,
                        headers={"kid": kid})
    with pytest.raises(ReceiptInvalid, match="refused"):
        verify(client, approved | {"decision": {"receipt": forged}})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("operation", "drop_database", "operation"),
    ("agent", "someone-else", "agent"),
    ("issuer", "https://evil.example", "another server"),
])
def test_the_wrong_operation_agent_or_issuer_fails(client, approved, field, value, message):
    with pytest.raises(ReceiptInvalid, match=message):
        verify(client, approved, **{field: value})


def test_a_seen_store_makes_a_receipt_single_use(client, approved):
    seen: set[str] = set()
    verify(client, approved, seen=seen)
    with pytest.raises(ReceiptInvalid, match="already used"):
        verify(client, approved, seen=seen)


def test_garbage_is_refused(client, approved):
    for junk in ["", "a.b", "a.b.c", None]:
        with pytest.raises(ReceiptInvalid):
            verify(client, approved | {"decision": {"receipt": junk}})


# --- Keys ------------------------------------------------------------------------------


def test_the_jwks_needs_no_key_and_the_private_half_is_stored_encrypted(client):
    keys = jwks(client)["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "OKP" and keys[0]["crv"] == "Ed25519"
    assert "d" not in keys[0]
    stored = SigningKey.objects.get()
    assert "PRIVATE KEY" not in stored.private_key and stored.kid == keys[0]["kid"]


def test_the_jwks_is_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert "/api/v1/keys" in paths and "/api/v1/requests/{id}/receipt" in paths


def test_rotation_publishes_the_new_key_before_it_signs_and_keeps_the_old_one(client, agent):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        old = jwks(client)["keys"][0]["kid"]
        call_command("rotate_signing_key", "--delay", "300")
        published = [k["kid"] for k in jwks(client)["keys"]]
        assert len(published) == 2 and published[0] == old
        new = published[1]
        signed_now = submit(client, agent, metrics=CALM).json()
        assert jwt.get_unverified_header(signed_now["decision"]["receipt"])["kid"] == old
    with time_machine.travel(start + timedelta(seconds=301), tick=False):
        later = submit(client, agent, metrics=CALM).json()
        assert jwt.get_unverified_header(later["decision"]["receipt"])["kid"] == new
        assert [k["kid"] for k in jwks(client)["keys"]] == [old, new]  # its receipts live on
        verify(client, signed_now)
    with time_machine.travel(start + timedelta(seconds=301 + 600), tick=False):
        assert [k["kid"] for k in jwks(client)["keys"]] == [new]
        call_command("rotate_signing_key")
        assert not SigningKey.objects.filter(kid=old).exists()


def test_a_configured_pem_key_signs_and_is_the_only_one_published(client, agent, settings):
    private = Ed25519PrivateKey.generate()
    settings.OVERSIGHT_SIGNING_KEY = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    keys = jwks(client)["keys"]
    assert [k["kid"] for k in keys] == [receipts.public_jwk(private)["kid"]]
    verify(client, submit(client, agent, metrics=CALM).json())
    assert not SigningKey.objects.exists()


def test_nodes_racing_for_the_first_key_agree_on_one(client, agent):
    barrier = threading.Barrier(4)
    kids: list[str] = []

    def first_use():
        try:
            barrier.wait()
            kids.append(receipts.signing_key()[1])
        finally:
            close_old_connections()

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(kids) == 4 and len(set(kids)) == 1
    assert SigningKey.objects.count() == 1


@override_settings(SECRET_KEY="another-secret")
def test_a_key_stored_under_another_secret_is_an_error_not_a_silent_new_key(client, agent):
    with override_settings(SECRET_KEY="first-secret"):
        receipts.signing_key()
    with pytest.raises(receipts.SigningKeyError):
        receipts.signing_key()


def test_the_policy_keeps_its_receipt_ttl_across_versions():
    policy = actions.do_change_policy("deploy", {"receipt_ttl_seconds": 120}, by="maria")
    policy = actions.do_change_policy("deploy", {"always": True}, by="maria")
    assert Policy.objects.get(pk=policy.pk).receipt_ttl_seconds == 120


def test_a_node_that_cannot_sign_still_decides_and_leaves_no_receipt(client, agent, caplog):
    body = pending(client, agent)
    with override_settings(SECRET_KEY="first-secret"):
        receipts.signing_key()
    with override_settings(SECRET_KEY="another-secret"):
        req = actions.do_decide(body["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    assert req.status == Status.APPROVED and req.receipt == ""
    assert OversightRequest.objects.get(id=body["id"]).status == Status.APPROVED
    assert "No receipt for request" in caplog.text
    resource = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    with pytest.raises(ReceiptInvalid):
        verify(client, resource)


def test_an_approval_with_changes_signs_the_digest_of_the_changed_payload(client, agent):
    body = pending(client, agent)
    changed = PAYLOAD | {"path": "/etc/app.yaml.new"}
    actions.do_decide(body["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia",
                      payload=changed)
    resource = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    assert resource["payload_sha256"] == body["payload_sha256"]  # the payload as submitted
    assert verify(client, resource, payload=changed)["approvers"] == ["olivia"]
    with pytest.raises(ReceiptInvalid, match="not the one that was approved"):
        verify(client, resource, payload=PAYLOAD)


def test_a_standing_approval_names_its_grant_and_the_approval_that_made_it_none(client, agent):
    actions.do_change_policy("*", {"max_standing_seconds": 600}, by="maria")
    first = pending(client, agent)
    actions.do_decide(first["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia",
                      grant=actions.GrantAsked(seconds=300, uses=3))
    granting = get(client, f"/api/v1/requests/{first['id']}", agent).json()
    assert verify(client, granting)["grant"] is None
    later = submit(client, agent, metrics=DEEP, payload=PAYLOAD).json()
    assert later["decision"]["source"] == "standing"
    claims = verify(client, later)
    req = OversightRequest.objects.get(id=later["id"])
    assert claims["source"] == "standing" and claims["grant"] == req.standing_grant_id


def test_a_two_person_approval_names_both_approvers_and_signs_once_complete(client, agent):
    actions.do_change_policy("*", {"required_approvals": 2, "timeout_action": "reject"}, by="maria")
    body = pending(client, agent)
    actions.do_decide(body["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    halfway = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    assert halfway["status"] == "pending" and halfway["decision"] is None
    assert get(client, f"/api/v1/requests/{body['id']}/receipt", agent).status_code == 409
    actions.do_decide(body["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="oscar")
    resource = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    assert verify(client, resource, require_human=True)["approvers"] == ["olivia", "oscar"]
