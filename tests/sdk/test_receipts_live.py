"""The SDK and signed receipts against the real server: checkpoints verify with the JWKS."""

from __future__ import annotations

import threading
import time

import pytest
from oversight_client import Client, ReceiptInvalid, verify_receipt

from oversight import actions
from oversight.models import OversightRequest, Source, Status

pytestmark = pytest.mark.live

CALM = {"memory_pressure": 10, "delegation_depth": 0, "circular_refs": 0}
DEEP = {"memory_pressure": 10, "delegation_depth": 5, "circular_refs": 0}


@pytest.fixture(autouse=True)
def same_site(live, settings):
    # The test process decides as an operator would on another node: same SITE_URL.
    settings.SITE_URL = live.url


def approve_when_pending(agent, by: str = "olivia") -> threading.Thread:
    def run():
        end = time.monotonic() + 20
        while time.monotonic() < end:
            found = OversightRequest.objects.filter(agent=agent.agent, status=Status.PENDING).first()
            if found:
                actions.do_decide(found.id, outcome=Status.APPROVED, source=Source.OPERATOR, by=by)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_checkpoint_with_the_jwks_verifies_the_receipt_of_an_operator_approval(live, agent):
    with Client(live.url, agent.key) as plain:
        jwks = plain.keys()
    assert jwks["keys"] and all(k["kty"] == "OKP" for k in jwks["keys"])
    approve_when_pending(agent)
    with Client(live.url, agent.key, jwks=jwks) as client, \
            client.checkpoint("deploy", "Deploy v2", payload={"tag": "v2"}, metrics=DEEP,
                             timeout=30) as request:
        receipt = request.raw["decision"]["receipt"]
    claims = verify_receipt(receipt, {"tag": "v2"}, jwks, operation="deploy", agent=agent.name,
                            issuer=live.url, require_human=True)
    assert claims["approvers"] == ["olivia"]
    with pytest.raises(ReceiptInvalid):
        verify_receipt(receipt, {"tag": "v3"}, jwks, operation="deploy", agent=agent.name,
                       issuer=live.url)


def test_a_checkpoint_refuses_an_approval_whose_receipt_does_not_verify(live, agent):
    foreign = {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "someone-else",
                         "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "alg": "EdDSA"}]}
    ran = []
    with Client(live.url, agent.key, jwks=foreign) as client, pytest.raises(ReceiptInvalid), \
            client.checkpoint("file_write", "Write", metrics=CALM):
        ran.append(True)
    assert ran == []


def test_a_fresh_receipt_for_acting_later(live, agent):
    with Client(live.url, agent.key) as client:
        request = client.submit("file_write", "Write", payload={"p": 1}, metrics=CALM)
        fresh = client.receipt(request.id)
        claims = verify_receipt(fresh, {"p": 1}, client.keys(), operation="file_write",
                                agent=agent.name, issuer=live.url)
    assert claims["sub"] == request.id and claims["exp"] - claims["iat"] == 600
