"""The whole path on real servers: beat broadcasts, the worker samples this machine, the
browser's socket gets `pressure.sample`, /metrics and the policy see the same host."""

import asyncio
import json
import socket
import time

import httpx
import pytest

from monitoring.models import HostSample

pytestmark = pytest.mark.live


def sign_in(site: str, username: str) -> str:
    with httpx.Client(base_url=site, timeout=10) as browser:
        token = browser.get("/login/").cookies["csrftoken"]
        answer = browser.post("/login/", data={"username": username, "password": "correct horse battery",
                                                "csrfmiddlewaretoken": token}, headers={"Referer": site + "/login/"})
        assert answer.status_code == 302, answer.text
        return f"sessionid={browser.cookies['sessionid']}"


async def first_pressure_sample(site: str, cookie: str, timeout: float) -> dict:
    import websockets

    async with websockets.connect(site.replace("http://", "ws://") + "/ws/feed/", origin=site,
                                  additional_headers={"Cookie": cookie}) as browser:
        assert json.loads(await asyncio.wait_for(browser.recv(), 5))["type"] == "snapshot"
        end = time.monotonic() + timeout
        while True:
            event = json.loads(await asyncio.wait_for(browser.recv(), max(0.1, end - time.monotonic())))
            if event["type"] == "pressure.sample":
                return event


def test_it_samples_this_host_live_and_serves_it_everywhere(live, operator, agent):
    host = socket.gethostname()
    cookie = sign_in(live.url, operator.username)
    event = asyncio.run(first_pressure_sample(live.url, cookie, timeout=20))
    assert set(event) == {"type", "host", "pressure", "available_bytes", "at"}
    assert event["host"] == host
    assert 0 <= event["pressure"] <= 100 and event["available_bytes"] > 0
    assert HostSample.objects.filter(host=host).exists()

    metrics = httpx.get(live.url + "/metrics", timeout=10)
    assert metrics.status_code == 200
    assert f'oversight_host_memory_pressure_percent{{host="{host}"}}' in metrics.text

    page = httpx.get(live.url + "/monitoring/", headers={"Cookie": cookie}, timeout=10)
    assert page.status_code == 200 and host in page.text

    body = {"operation": "delegate", "summary": "Uses the host's pressure", "metrics": {"host": host}}
    resource = httpx.post(live.url + "/api/v1/requests", json=body, headers=agent.headers, timeout=10).json()
    trigger = next(t for t in resource["triggers"] if t["rule"] == "memory_pressure")
    assert trigger["source"] == "monitoring"
    assert trigger["value"] is not None
