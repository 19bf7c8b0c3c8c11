"""Cross-project isolation, generated from the route table of the application the engine serves.

Project A (``p1``) gets one of everything: resources, Subscriptions of every channel with a
dead letter and event numbers, a Bot with an execution and an async job, records in the event
log. Then every route of ``app.router.routes()`` is called with every method it serves, its path
parameters filled with A's real ids, twice: with project B's key (``p2``, not an admin) and with
B's dashboard session (cookie and CSRF token). Every answer must reveal nothing of A: an
address of one of A's objects is a 4xx, and no status, header or body carries A's values or an
id of A that the request did not itself contain. After the sweep A's data is exactly as before.

A route added to the engine must be added to :data:`ROUTES` (with the body or query that
exercises it, if it takes one), or :func:`test_every_route_is_covered` fails; a path parameter
the suite cannot fill fails :func:`test_every_route_and_method_reveals_nothing`.

Websocket binding and message topics, which the route table cannot show, have tests of their
own below.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, WSMsgType, web
from aiohttp.test_utils import TestClient

from fhirbots.engine.dashboard.sessions import CSRF_HEADER
from fhirbots.engine.operations.bots import EXECUTION_HEADER
from fhirbots.engine.runtime import Engine
from fhirbots.engine.web.auth import generate_key, hash_key
from fhirbots.schemas.topics import CHANGES
from tests.conftest import POSTGRES
from tests.engine.scenarios.dashboard import Client, served_engine, sign_in
from tests.waiting import eventually

pytestmark = pytest.mark.integration

BASE = "/fhir/R4"
MARK = uuid.uuid4().hex[:10]
"""Makes A's values unique to this run."""

A_VALUES = {
    "family": f"Aasecretfamily{MARK}",
    "note": f"a-secret-note-{MARK}",
    "hook": f"a-secret-hook-{MARK}",
    "header": f"a-secret-header-{MARK}",
    "code": f"a-secret-code-{MARK}",
    "output": f"a-secret-output-{MARK}",
    "topic": f"a-topic-{MARK}",
    "project name": "Project one",
}
"""Values only project A's data holds; none may appear in an answer to B."""

# -- the route table ---------------------------------------------------------------------------

ANY = "any"
"""Key of :data:`ROUTES` values: the route is called as is."""

ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    # probes and open paths
    ("GET", "/"): {},
    ("GET", "/healthz"): {},
    ("GET", "/livez"): {},
    ("GET", "/readyz"): {},
    ("GET", "/metrics"): {},
    ("GET", f"{BASE}/metadata"): {},
    ("GET", f"{BASE}/openapi.json"): {},
    # FHIR REST
    ("GET", BASE): {"query": "_id={patient}"},
    ("GET", f"{BASE}/"): {"query": "_id={patient}"},
    ("GET", f"{BASE}/_search"): {"query": "_id={patient}"},
    ("POST", f"{BASE}/$reindex"): {"json": "empty"},
    ("GET", f"{BASE}/$reindex/{{job}}"): {},
    ("POST", BASE): {"json": "bundle"},
    ("POST", f"{BASE}/"): {"json": "bundle"},
    ("POST", f"{BASE}/_search"): {"form": {"_id": "{patient}"}},
    ("GET", f"{BASE}/_history"): {},
    ("GET", f"{BASE}/{{type}}"): {"query": "_id={id}"},
    ("POST", f"{BASE}/{{type}}"): {"json": "resource"},
    ("PUT", f"{BASE}/{{type}}"): {"query": "_id={id}", "json": "resource"},
    ("PATCH", f"{BASE}/{{type}}"): {"query": "_id={id}", "json": "patch"},
    ("DELETE", f"{BASE}/{{type}}"): {"query": "_id={id}"},
    ("POST", f"{BASE}/{{type}}/_search"): {"form": {"_id": "{id}"}},
    ("GET", f"{BASE}/{{type}}/_history"): {},
    ("GET", f"{BASE}/{{type}}/{{id}}"): {},
    ("PUT", f"{BASE}/{{type}}/{{id}}"): {"json": "resource"},
    ("PATCH", f"{BASE}/{{type}}/{{id}}"): {"json": "patch"},
    ("DELETE", f"{BASE}/{{type}}/{{id}}"): {},
    ("GET", f"{BASE}/{{type}}/{{id}}/_history"): {},
    ("GET", f"{BASE}/{{type}}/{{id}}/_history/{{vid}}"): {},
    ("POST", f"{BASE}/{{type}}/$validate"): {"json": "resource"},
    ("POST", f"{BASE}/{{type}}/{{id}}/$validate"): {"json": "resource"},
    ("GET", f"{BASE}/Patient/$everything"): {},
    ("GET", f"{BASE}/Patient/{{id}}/$everything"): {},
    # subscriptions and delivery
    ("POST", f"{BASE}/Subscription/$explain"): {"json": "patient"},
    ("GET", f"{BASE}/Subscription/$status"): {"query": "id={subscription}"},
    ("GET", f"{BASE}/Subscription/$websocket"): {},
    ("GET", f"{BASE}/Subscription/$dead-letters"): {"query": "subscription={subscription}"},
    ("POST", f"{BASE}/Subscription/$dead-letters/$retry"): {
        "query": "id={notification}&subscription={subscription}"
    },
    ("POST", f"{BASE}/Subscription/$dead-letters/$discard"): {
        "query": "id={notification}&subscription={subscription}"
    },
    ("GET", f"{BASE}/Subscription/{{id}}/$status"): {},
    ("GET", f"{BASE}/Subscription/{{id}}/$events"): {"query": "eventsSinceNumber=1"},
    ("POST", f"{BASE}/Subscription/{{id}}/$events"): {"json": "parameters"},
    ("GET", f"{BASE}/Subscription/{{id}}/$get-ws-binding-token"): {},
    ("POST", f"{BASE}/Subscription/{{id}}/$get-ws-binding-token"): {},
    ("POST", f"{BASE}/Subscription/{{id}}/$resend"): {"query": "resource=Patient/{patient}"},
    # bots
    ("GET", f"{BASE}/Bot/$job/{{job}}"): {},
    ("POST", f"{BASE}/Bot/{{id}}/$deploy"): {"json": "deploy"},
    ("POST", f"{BASE}/Bot/{{id}}/$execute"): {"json": "empty"},
    ("GET", f"{BASE}/Bot/{{id}}/$execute"): {},
    # the admin API (the operator's: 403 for project keys, before anything is read)
    ("GET", "/admin/projects"): {},
    ("POST", "/admin/projects"): {"json": "project"},
    ("GET", "/admin/keys"): {"query": "project=p1"},
    ("POST", "/admin/keys"): {"json": "key"},
    ("POST", "/admin/keys/{id}/revoke"): {},
    # the dashboard
    ("GET", "/dashboard/static"): {},
    ("GET", "/dashboard/login"): {},
    ("POST", "/dashboard/login"): {"form": {"next": "/dashboard/"}},
    ("POST", "/dashboard/project"): {"form": {"project": "p1"}},
    ("POST", "/dashboard/logout"): {"form": {}, "last": True},
    ("GET", "/dashboard/"): {},
    ("GET", "/dashboard/api/stats"): {},
    ("GET", "/dashboard/subscriptions/new"): {},
    ("POST", "/dashboard/subscriptions/new"): {"form": "dashboard"},
    ("GET", "/dashboard/subscriptions"): {},
    ("GET", "/dashboard/api/subscriptions"): {},
    ("GET", "/dashboard/subscriptions/{id}"): {},
    ("GET", "/dashboard/api/subscriptions/{id}"): {},
    ("POST", "/dashboard/subscriptions/{id}/status"): {"form": "dashboard"},
    ("POST", "/dashboard/subscriptions/{id}/explain"): {"form": "dashboard"},
    ("POST", "/dashboard/subscriptions/{id}/redeliver"): {"form": "dashboard"},
    ("POST", "/dashboard/subscriptions/{id}/resend"): {"form": "dashboard"},
    ("POST", "/dashboard/subscriptions/{id}/dead-letters/{action}"): {"form": "dashboard"},
    ("GET", "/dashboard/bots"): {},
    ("GET", "/dashboard/bots/{id}"): {},
    ("GET", "/dashboard/api/bots"): {},
    ("GET", "/dashboard/api/bots/{id}"): {},
    ("POST", "/dashboard/api/bots/{id}/check"): {"json": "dashboard"},
    ("GET", "/dashboard/api/bots/{id}/history"): {},
    ("GET", "/dashboard/api/bots/{id}/history/{version}"): {},
    ("POST", "/dashboard/api/bots/{id}/rollback"): {"json": "dashboard"},
    ("PUT", "/dashboard/api/bots/{id}/sample"): {"json": "dashboard"},
    ("PUT", "/dashboard/api/bots/{id}/recording"): {"json": "dashboard"},
    ("POST", "/dashboard/api/bots/{id}/run"): {"json": "dashboard"},
    ("GET", "/dashboard/executions"): {"query": "bot={bot}"},
    ("GET", "/dashboard/executions/{id}"): {},
    ("GET", "/dashboard/api/executions"): {"query": "bot={bot}"},
    ("GET", "/dashboard/api/executions/{id}"): {},
    ("POST", "/dashboard/api/executions/{id}/$rerun"): {"json": "dashboard"},
    ("GET", "/dashboard/tail"): {},
    ("GET", "/dashboard/api/tail"): {"stream": True},
    ("GET", "/dashboard/events"): {"query": "q={patient}"},
    ("GET", "/dashboard/events/{topic}/{partition}/{offset}"): {},
    ("GET", "/dashboard/api/events"): {"query": "q={patient}"},
    ("GET", "/dashboard/api/events/{topic}/{partition}/{offset}"): {},
    ("GET", "/dashboard/trace/{ref}"): {},
    ("GET", "/dashboard/api/trace/{ref}"): {},
}
"""Every route and method the engine serves (HEAD goes with GET), with what to send: a JSON
body (``json``: a kind :meth:`World.json_body` knows), a form, a query; ``{name}`` in them is
one of A's ids (:attr:`World.ids`). A ``stream`` (server-sent events) is read to its first
event; :func:`test_the_live_tail_shows_only_the_callers_project` follows it longer."""


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route of ``app`` (HEAD folded into GET)."""
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        found.add((route.method, route.resource.canonical))
    return found


# -- project A and the calls -------------------------------------------------------------------


@dataclass
class World:
    """The served engine, A's objects and B's two ways in."""

    engine: Engine
    a: Client
    """A client with A's key."""
    b_key: Client
    """A client with B's key (no cookies)."""
    b_session: Client
    """A client signed in to the dashboard with B's key."""
    b_headers: dict[str, str]
    csrf: str
    b_key_id: str
    ids: dict[str, str] = field(default_factory=dict)
    """A's ids by name (patient, observation, subscription, bot, execution ...)."""
    event: tuple[int, int] = (0, 0)
    """(partition, offset) of one of A's change events in ``fhir.changes.v1``."""

    @property
    def secret_ids(self) -> set[str]:
        return {v for k, v in self.ids.items() if k not in ("vid",)}

    def path_params(self, template: str) -> list[dict[str, str]]:
        """Ways to fill ``template``'s parameters with A's ids (fails for an unknown name)."""
        ids = self.ids
        fhir_targets = [
            ("Patient", ids["patient"]),
            ("Observation", ids["observation"]),
            ("Subscription", ids["subscription"]),
            ("Bot", ids["bot"]),
        ]
        if "{type}" in template and "{id}" in template:
            return [{"type": t, "id": i, "vid": "1"} for t, i in fhir_targets]
        if "{type}" in template:
            return [{"type": t, "id": i} for t, i in fhir_targets]
        names = [part[1:-1] for part in template.split("/") if part.startswith("{")]
        if not names:
            return [{}]
        choices: dict[str, list[str]] = {}
        for name in names:
            choices[name] = self._fill(template, name)
        rows: list[dict[str, str]] = [{}]
        for name, values in choices.items():
            rows = [{**row, name: value} for row in rows for value in values]
        return rows

    def _fill(self, template: str, name: str) -> list[str]:
        ids = self.ids
        if name == "id":
            if template.startswith("/admin/keys/"):
                return [ids["key"]]
            if "/Subscription/" in template or "/subscriptions/" in template:
                return [ids["subscription"], ids["ws_subscription"], ids["message_subscription"]]
            if "/Bot/" in template or "/bots/" in template:
                return [ids["bot"]]
            if "/executions/" in template:
                return [ids["execution"]]
            if "/Patient/" in template:
                return [ids["patient"]]
        if name in ("vid", "version"):
            return ["1"]
        if name == "job":
            return [ids["job"]]
        if name == "action":
            return ["retry", "discard"]
        if name == "topic":
            return [CHANGES]
        if name == "partition":
            return [str(self.event[0])]
        if name == "offset":
            return [str(self.event[1])]
        if name == "ref":
            return [ids["execution"], f"Patient/{ids['patient']}"]
        raise AssertionError(
            f"no way to fill {{{name}}} of {template} with project A's ids: teach World._fill"
        )

    def json_body(self, kind: str, params: dict[str, str]) -> Any:
        """A JSON body of ``kind`` aimed at A's objects."""
        ids = self.ids
        resource_type = params.get("type", "Patient")
        if kind == "resource":
            body: dict[str, Any] = {"resourceType": resource_type}
            if "id" in params:
                body["id"] = params["id"]
            if resource_type == "Observation":
                body.update(
                    status="final",
                    code={"text": "x"},
                    subject={"reference": f"Patient/{ids['patient']}"},
                )
            return body
        if kind == "patch":
            return [{"op": "test", "path": "/name/0/family", "value": A_VALUES["family"]}]
        if kind == "patient":
            return {"resourceType": "Patient", "id": ids["patient"], "gender": "female"}
        if kind == "parameters":
            return {
                "resourceType": "Parameters",
                "parameter": [{"name": "eventsSinceNumber", "valueInteger": 1}],
            }
        if kind == "deploy":
            return {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "code", "valueString": "def handler(fhir, event):\n  pass\n"}
                ],
            }
        if kind == "bundle":
            reads = [
                f"Patient/{ids['patient']}",
                f"Patient/{ids['patient']}/_history/1",
                f"Patient?_id={ids['patient']}",
                f"Observation?subject=Patient/{ids['patient']}&_include=Observation:subject",
                f"Subscription/{ids['subscription']}",
                f"Bot/{ids['bot']}",
            ]
            entries: list[dict[str, Any]] = [
                {"request": {"method": "GET", "url": url}} for url in reads
            ]
            entries.append(
                {"request": {"method": "DELETE", "url": f"Observation/{ids['observation']}"}}
            )
            return {"resourceType": "Bundle", "type": "batch", "entry": entries}
        if kind == "dashboard":
            return {"code": "def handler(fhir, event):\n  pass\n", "version": "1", "input": {}}
        if kind == "project":  # B creating A's project: 403, not a 409 that confirms it
            return {"id": "p1", "name": "taken over"}
        if kind == "key":
            return {"project": "p1", "name": "b-owned"}
        if kind == "empty":
            return {}
        raise AssertionError(f"unknown body kind {kind!r}")

    def form_body(self, form: Any, params: dict[str, str]) -> dict[str, str]:
        """A form aimed at A's objects (``dashboard``: every field the dashboard's forms use)."""
        ids = self.ids
        if form == "dashboard":
            form = {
                "confirm": "yes",
                "status": "off",
                "version": "1",
                "all": "yes",
                "first": "1",
                "last": "9",
                "resource": f"Patient/{ids['patient']}",
                "id": ids.get("notification", ""),
                "criteria": f"Patient?_id={ids['patient']}",
                "endpoint": "https://example.org/hook",
                "channel": "rest-hook",
            }
        return {k: v.format_map({**ids, **params}) for k, v in form.items()}


def _leaks(world: World, sent: str, answer: str, *, ids: bool = True) -> list[str]:
    """A's values in ``answer`` and, with ``ids``, A's ids in it that ``sent`` did not
    contain."""
    found = [f"{name} {value!r}" for name, value in A_VALUES.items() if value in answer]
    if ids:
        found += [f"id {i!r}" for i in world.secret_ids if i in answer and i not in sent]
    return found


async def _text(response: ClientResponse, *, stream: bool = False) -> str:
    """Headers and body of ``response``; of a stream (server-sent events) its first event."""
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    if stream and response.method != "HEAD" and response.status == 200:
        first = await response.content.readuntil(b"\n\n")
        response.close()
        return headers + "\n" + first.decode(errors="replace")
    return headers + "\n" + (await response.text(errors="replace"))


async def _call(
    world: World, client: Client, session: bool, method: str, template: str, spec: dict[str, Any]
) -> list[str]:
    """Call one route for each way to fill it; the problems found.

    Once B has written (PUT ``Patient/<id>`` makes B a Patient of its own under the id A's has),
    an id of A can rightly appear in answers about B's own data: writes are checked for A's
    values only, and reads run before any write."""
    problems: list[str] = []
    for params in world.path_params(template):
        path = template.format(**params) if "{" in template else template
        if template == "/dashboard/static":
            path = "/dashboard/static/app.css"
        query = spec.get("query", "").format_map({**world.ids, **params})
        url = f"{path}?{query}" if query else path
        headers: dict[str, str] = {} if session else dict(world.b_headers)
        if session:
            headers[CSRF_HEADER] = world.csrf
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        sent = url
        if "json" in spec:
            body = world.json_body(spec["json"], params)
            kwargs["data"] = json.dumps(body)
            headers["Content-Type"] = (
                "application/json-patch+json" if spec["json"] == "patch" else "application/json"
            )
            sent += kwargs["data"]
        elif "form" in spec:
            form = world.form_body(spec["form"], params)
            if session:
                form["csrf"] = world.csrf
            kwargs["data"] = form
            sent += json.dumps(form)
        for verb in (method, "HEAD") if method == "GET" else (method,):
            response = await client.request(verb, url, **kwargs)
            answer = await _text(response, stream=bool(spec.get("stream")))
            where = f"{verb} {url} ({'session' if session else 'key'}) -> {response.status}"
            leaks = _leaks(world, sent, answer, ids=verb in ("GET", "HEAD"))
            if leaks:
                problems.append(f"{where} reveals {', '.join(leaks)}: {answer[:300]}")
            addresses_a = any(v in path for v in world.secret_ids)
            if addresses_a and verb in ("GET", "HEAD") and 200 <= response.status < 300:
                problems.append(f"{where}: a read of A's object must be refused")
    return problems


# -- the fixture -------------------------------------------------------------------------------


async def _json(response: ClientResponse, status: int) -> Any:
    text = await response.text()
    assert response.status == status, f"{response.method} {response.url}: {response.status} {text}"
    return json.loads(text) if text else None


async def _seed(world: World) -> None:
    """One of everything in project A."""
    a, ids = world.a, world.ids
    json_headers = {"Content-Type": "application/fhir+json"}
    patient = {
        "resourceType": "Patient",
        "gender": "female",
        "name": [{"family": A_VALUES["family"]}],
    }
    created = await _json(await a.post(f"{BASE}/Patient", json=patient, headers=json_headers), 201)
    ids["patient"] = created["id"]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "note": [{"text": A_VALUES["note"]}],
        "subject": {"reference": f"Patient/{ids['patient']}"},
    }
    created = await _json(await a.post(f"{BASE}/Observation", json=observation), 201)
    ids["observation"] = created["id"]
    channels = {
        "subscription": {
            "type": "rest-hook",
            # refused by the address guard at once: a dead letter without waiting for retries
            "endpoint": f"http://127.0.0.1:9/{A_VALUES['hook']}",
            "header": [f"Authorization: Bearer {A_VALUES['header']}"],
            "payload": "application/fhir+json",
        },
        "ws_subscription": {"type": "websocket", "payload": "application/fhir+json"},
        "message_subscription": {
            "type": "message",
            "endpoint": A_VALUES["topic"],
            "payload": "application/fhir+json",
        },
    }
    for name, channel in channels.items():
        subscription = {
            "resourceType": "Subscription",
            "status": "active",
            "reason": "isolation test",
            "criteria": "Observation?status=final",
            "channel": channel,
        }
        created = await _json(await a.post(f"{BASE}/Subscription", json=subscription), 201)
        ids[name] = created["id"]
    bot = {
        "resourceType": "Bot",
        "name": "a-bot",
        "code": f"# {A_VALUES['code']}\ndef handler(fhir, event):\n"
        f"    return {{'said': '{A_VALUES['output']}'}}\n",
    }
    ids["bot"] = (await _json(await a.post(f"{BASE}/Bot", json=bot), 201))["id"]
    run = await a.post(f"{BASE}/Bot/{ids['bot']}/$execute", json={})
    assert run.status == 200, await run.text()
    ids["execution"] = run.headers[EXECUTION_HEADER]
    queued = await a.post(
        f"{BASE}/Bot/{ids['bot']}/$execute", json={}, headers={"Prefer": "respond-async"}
    )
    assert queued.status == 202, await queued.text()
    ids["job"] = queued.headers["Content-Location"].rsplit("/", 1)[-1]
    # A change the subscriptions see: a dead letter (rest-hook) and event numbers.
    observation["note"] = [{"text": A_VALUES["note"]}]
    await _json(await a.post(f"{BASE}/Observation", json=observation), 201)

    async def dead_letter() -> str | None:
        found = await _json(await a.get(f"{BASE}/Subscription/$dead-letters"), 200)
        for letter in found.get("parameter") or ():
            parts = {p["name"]: p for p in letter["part"]}
            return str(parts["id"]["valueString"])
        return None

    ids["notification"] = await eventually(dead_letter, "A's dead letter")

    async def in_error() -> bool:  # the dispatcher marks it after the dead letter
        found = await _json(await a.get(f"{BASE}/Subscription/{ids['subscription']}"), 200)
        return bool(found["status"] == "error")

    await eventually(in_error, "A's rest-hook subscription in error")
    log = world.engine.event_log
    assert log is not None
    for partition in await log.end_offsets(CHANGES):
        for record in await log.read(CHANGES, partition, offset=0):
            if record.key.startswith("p1/"):
                world.event = (record.partition, record.offset)
    ids["vid"] = "1"


async def _snapshot(world: World) -> list[Any]:
    """What A sees of its own data (compared before and after the sweep)."""
    a, ids = world.a, world.ids
    history = await _json(await a.get(f"{BASE}/_history?_count=1000"), 200)
    dead = await _json(await a.get(f"{BASE}/Subscription/$dead-letters"), 200)
    events = await _json(
        await a.get(f"{BASE}/Subscription/{ids['subscription']}/$events?eventsSinceNumber=1"), 200
    )
    # A's own bot runs write AuditEvents in A's project whenever they finish: those are
    # compared by who wrote them (never B), the rest entry by entry.
    entries = [
        (e["fullUrl"], e["response"]["etag"])
        for e in history["entry"]
        if e["request"]["url"].split("/")[0] != "AuditEvent"
    ]
    by_b = [e for e in history["entry"] if world.b_key_id in json.dumps(e)]
    assert not by_b, f"B wrote into project A: {by_b}"
    numbers = [
        e["resource"].get("notificationEvent")
        for e in events["entry"]
        if e["resource"]["resourceType"] == "SubscriptionStatus"
    ]
    return [sorted(entries), dead, numbers]


@pytest.fixture(params=["sqlite", POSTGRES])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with served_engine(request.param, tmp_path) as served:
        b_secret = generate_key()
        # B's key is a project key: an admin key is the engine operator's and sees every project.
        b_record = await served.engine.storage.add_api_key(
            "p2", hash_key(b_secret), name="b", admin=False
        )
        a = TestClient(served.server, headers={"Authorization": f"Bearer {served.key}"})
        b_key = TestClient(served.server)
        b_session = TestClient(served.server)
        for client in (a, b_key, b_session):
            await client.start_server()
        try:
            csrf = await sign_in(b_session, b_secret)
            world = World(
                served.engine,
                a,
                b_key,
                b_session,
                {"Authorization": f"Bearer {b_secret}"},
                csrf,
                b_record.id,
            )
            await _seed(world)
            a_key = await served.engine.storage.find_api_key(hash_key(served.key))
            assert a_key is not None
            world.ids["key"] = a_key.id
            yield world
        finally:
            for client in (a, b_key, b_session):
                await client.close()


# -- the tests ---------------------------------------------------------------------------------


async def test_every_route_is_covered(world: World) -> None:
    app = world.b_key.app
    assert app is not None
    served = served_routes(app)
    missing = sorted(served - set(ROUTES))
    stale = sorted(set(ROUTES) - served)
    assert not missing, f"routes served but not in ROUTES (add them, with what to send): {missing}"
    assert not stale, f"routes in ROUTES the engine no longer serves: {stale}"


async def test_every_route_and_method_reveals_nothing(world: World) -> None:
    before = await _snapshot(world)
    problems: list[str] = []
    reads = [(route, spec) for route, spec in ROUTES.items() if route[0] == "GET"]
    writes = sorted(
        ((route, spec) for route, spec in ROUTES.items() if route[0] != "GET"),
        key=lambda item: bool(item[1].get("last")),
    )
    for calls in (reads, writes):
        for session in (False, True):
            client = world.b_session if session else world.b_key
            for (method, template), spec in calls:
                problems += await _call(world, client, session, method, template, spec)
    assert not problems, "\n".join(problems)
    after = await _snapshot(world)
    for name, was, now in zip(
        ("history", "dead letters", "event numbers"), before, after, strict=True
    ):
        assert now == was, f"B's calls changed A's {name}: {was} -> {now}"


async def test_the_admin_api_refuses_project_keys(world: World) -> None:
    """B's key and B's dashboard session get 403 on every admin route, with nothing of A (nor
    of any other project) in the answer, and nothing changes: no project, no key, no
    revocation."""
    before = await world.engine.storage.list_api_keys()
    projects = await world.engine.storage.list_projects()
    for session in (False, True):
        client = world.b_session if session else world.b_key
        for (method, template), spec in ROUTES.items():
            if not template.startswith("/admin/"):
                continue
            path = template.format(id=world.ids["key"])
            query = spec.get("query", "")
            headers: dict[str, str] = {} if session else dict(world.b_headers)
            if session:
                headers[CSRF_HEADER] = world.csrf
            body = json.dumps(world.json_body(spec["json"], {})) if "json" in spec else None
            response = await client.request(
                method, f"{path}?{query}" if query else path, data=body, headers=headers
            )
            answer = await response.text()
            assert response.status == 403, (method, path, session, response.status, answer)
            assert not _leaks(world, path + (body or ""), answer), answer
            for record in before:
                assert record.id not in answer
            for project in projects:
                assert project.name not in answer
    assert await world.engine.storage.list_api_keys() == before
    assert [k.revoked for k in await world.engine.storage.list_api_keys()] == [
        k.revoked for k in before
    ]
    assert await world.engine.storage.list_projects() == projects


async def test_websocket_tokens_do_not_cross_projects(world: World) -> None:
    ids = world.ids
    token = await _json(
        await world.a.post(f"{BASE}/Subscription/{ids['ws_subscription']}/$get-ws-binding-token"),
        200,
    )
    a_token = token["parameter"][0]["valueString"]
    path = f"{BASE}/Subscription/$websocket"
    socket = await world.b_key.ws_connect(path, headers=world.b_headers)
    await socket.send_str(f"bind-with-token {a_token}")
    answer = await eventually(socket.receive, "the answer to A's token")
    assert answer.type == WSMsgType.TEXT and answer.data.startswith("error")
    assert not _leaks(world, "", answer.data)
    await socket.close()
    # The refused attempt spent the token: not even A can use it now.
    refused = await world.a.get(f"{path}?token={a_token}")
    assert refused.status == 401
    hub = world.engine.dispatcher.hub if world.engine.dispatcher else None
    assert hub is not None and hub.bound("p1", ids["ws_subscription"]) == 0
    assert hub.bound("p2", ids["ws_subscription"]) == 0


async def test_message_topics_are_per_project(world: World) -> None:
    log = world.engine.event_log
    assert log is not None
    b = world.b_key
    for reserved in (CHANGES, "bots.executions.v1", f"project.p1.{A_VALUES['topic']}", "__x"):
        subscription = {
            "resourceType": "Subscription",
            "status": "active",
            "reason": "into another namespace",
            "criteria": "Observation?status=final",
            "channel": {"type": "message", "endpoint": reserved},
        }
        response = await b.post(f"{BASE}/Subscription", json=subscription, headers=world.b_headers)
        assert response.status == 422, reserved
    same_name = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "same name as A's",
        "criteria": "Observation?status=final",
        "channel": {
            "type": "message",
            "endpoint": A_VALUES["topic"],
            "payload": "application/fhir+json",
        },
    }
    await _json(await b.post(f"{BASE}/Subscription", json=same_name, headers=world.b_headers), 201)
    patient = {"resourceType": "Patient", "gender": "male"}
    b_patient = await _json(
        await b.post(f"{BASE}/Patient", json=patient, headers=world.b_headers), 201
    )
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "b's"},
        "subject": {"reference": f"Patient/{b_patient['id']}"},
    }
    await _json(await b.post(f"{BASE}/Observation", json=observation, headers=world.b_headers), 201)

    async def records(topic: str) -> list[bytes]:
        try:
            ends = await log.end_offsets(topic)
        except Exception:  # the topic does not exist (yet)
            return []
        out: list[bytes] = []
        for partition in ends:
            out += [r.value for r in await log.read(topic, partition, offset=0)]
        return out

    async def b_published() -> list[bytes] | None:
        found = await records(f"project.p2.{A_VALUES['topic']}")
        return found or None

    (b_message,) = await eventually(b_published, "B's notification on B's topic")
    assert b_patient["id"].encode() in b_message
    a_messages = await records(f"project.p1.{A_VALUES['topic']}")
    assert a_messages and all(b_patient["id"].encode() not in m for m in a_messages)


async def test_the_live_tail_shows_only_the_callers_project(world: World) -> None:
    stream = await world.b_session.get("/dashboard/api/tail", headers={CSRF_HEADER: world.csrf})
    assert stream.status == 200
    try:
        ready = await stream.content.readuntil(b"\n\n")
        assert b'"project":"p2"' in ready
        # A writes first, then B: the tail must show B's change and nothing of A's before it.
        a_patient = {"resourceType": "Patient", "name": [{"family": A_VALUES["family"]}]}
        await _json(await world.a.post(f"{BASE}/Patient", json=a_patient), 201)
        b_patient = await _json(
            await world.b_key.post(
                f"{BASE}/Patient", json={"resourceType": "Patient"}, headers=world.b_headers
            ),
            201,
        )
        seen = b""
        while b_patient["id"].encode() not in seen:
            seen += await stream.content.readuntil(b"\n\n")
        assert not _leaks(world, "", seen.decode())
    finally:
        stream.close()
