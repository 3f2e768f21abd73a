import json as jsonlib

_NO_BODY = object()


def post(client, path, agent=None, json=_NO_BODY, data=None, content_type="application/json", headers=None):
    headers = dict(headers or {})
    if agent is not None:
        headers["Authorization"] = f"Bearer {agent.key}"
    body = data if data is not None else (jsonlib.dumps(json) if json is not _NO_BODY else "")
    return client.post(path, data=body, content_type=content_type, headers=headers)


def get(client, path, agent=None, headers=None):
    headers = dict(headers or {})
    if agent is not None:
        headers["Authorization"] = f"Bearer {agent.key}"
    return client.get(path, headers=headers)


def submit(client, agent, **fields):
    body = {"operation": "delegate", "summary": "Delegate the scrape"} | fields
    return post(client, "/api/v1/requests", agent, json=body)


def error_code(response):
    return response.json()["error"]["code"]
