"""The chaos run: the distributed mode on a private network of namespaces, a steady load, one
fault after another, then the checks of :mod:`.checks`.

Layout (one namespace each, joined by a bridge): ``postgres`` (a cluster of the run's own),
``kafka`` (a single-node KRaft broker), ``api1``/``api2`` (``fhirbots serve --api-only``, which
also relay), two of each worker role (``fhirbots worker relay|matcher|dispatcher|bots``), the
rest-hook ``receiver``, and ``client``, where this process's own connections live.

Faults, in turn, each followed by a wait until the pipeline caught up: ``kill -9`` (and
restart) one process of each role, restart the broker, restart PostgreSQL (both after
``kill -9``), cut a dispatcher's network for 20 s.

:func:`run_chaos` is shared by ``tests/integration/test_chaos.py`` and ``bench/chaos.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from tests.integration.chaos.checks import (
    FLAG_SYSTEM,
    RECOVERY_BOUND,
    Fault,
    Report,
    verify,
)
from tests.integration.chaos.cluster import CUT_SECONDS, ROLES, START_SECONDS, Cluster
from tests.integration.chaos.load import Api, Load, Write
from tests.integration.chaos.netns import inside
from tests.integration.chaos.receiver import Receipts
from tests.waiting import eventually

__all__ = ["run_chaos"]

DRAIN_SECONDS = 120.0
"""Bound of the final wait until every acknowledged write is delivered and ran the bot."""

MAX_ATTEMPTS = "https://medplum.com/fhir/StructureDefinition/subscription-max-attempts"

BOT_CODE = f'''
def handler(fhir, event):
    patient = event.input
    fhir.create({{
        "resourceType": "Flag",
        "status": "active",
        "identifier": [{{"system": "{FLAG_SYSTEM}", "value": event.idempotency_key}}],
        "code": {{"text": "chaos"}},
        "subject": {{"reference": "Patient/" + patient["id"]}},
    }})
'''
"""The bot of the run: one Flag per run, identified by the run's idempotency key."""


async def _set_up(api: Api, receiver_url: str) -> list[str]:
    """The bot and the two subscriptions on every new Patient (a rest-hook and the bot);
    returns the subscriptions' ids."""
    bot = await api.expect(
        "POST",
        "Bot",
        {
            "resourceType": "Bot",
            "name": "chaos-flagger",
            "code": BOT_CODE,
            "access": [{"resourceType": "Flag", "interaction": ["create"]}],
        },
        201,
    )
    ids: list[str] = []
    for endpoint in (f"{receiver_url}/notify", f"Bot/{bot['id']}"):
        subscription = {
            "resourceType": "Subscription",
            "status": "active",
            "reason": "chaos",
            "criteria": "Patient?gender=female",
            "channel": {
                "type": "rest-hook",
                "endpoint": endpoint,
                "payload": "application/fhir+json",
            },
            "extension": [{"url": MAX_ATTEMPTS, "valueInteger": 30}],
        }
        created = await api.expect("POST", "Subscription", subscription, 201)
        ids.append(created["id"])
    return ids


async def _flagged(api: Api) -> set[str]:
    """Patients the bot has written a Flag for."""
    return {f["subject"]["reference"] for f in await api.every("Flag?_count=1000")}


async def _warm_up(api: Api, receipts: Receipts, count: int = 16) -> None:
    """Write ``count`` Patients and wait until each was delivered and ran the bot: every
    consumer group has settled with a live member on each partition these touched."""
    written: list[str] = []
    for n in range(count):
        body = await api.expect(
            "POST",
            "Patient",
            {"resourceType": "Patient", "gender": "female", "name": [{"family": f"Warm{n}"}]},
            201,
        )
        written.append(f"Patient/{body['id']}")

    def delivered() -> bool:
        receipts.refresh()
        return all(f"{p}/_history/1" in receipts.first for p in written)

    await eventually(delivered, "the warm-up writes delivered", within=START_SECONDS)

    async def ran() -> bool:
        return set(written) <= await _flagged(api)

    await eventually(ran, "the warm-up writes' bot runs", within=START_SECONDS)


async def _caught_up(load: Load, receipts: Receipts, fault: Fault) -> None:
    """Wait until every write sent before ``fault`` was repaired is answered and, when
    acknowledged, delivered, and one acknowledged write sent after the repair is delivered:
    the backlog the fault built is drained and new writes flow again. The recovery ends with
    the last of those deliveries."""
    pending: list[Write] | None = None
    window: list[Write] = []

    def check() -> float | None:
        nonlocal pending
        if pending is None:
            window[:] = [w for w in load.writes if w.sent <= fault.repaired]
            pending = list(window)
        if any(w.status is None and w.error is None for w in pending):
            return None  # still in flight
        receipts.refresh()
        pending = [
            w for w in pending if w.resource is not None and w.resource not in receipts.first
        ]
        if pending:
            return None
        after = [
            receipts.first[w.resource]
            for w in load.writes
            if w.sent > fault.repaired and w.resource is not None and w.resource in receipts.first
        ]
        if not after:
            return None
        before = [receipts.first[w.resource] for w in window if w.resource is not None]
        return max([*before, min(after)])

    with contextlib.suppress(AssertionError):  # reported as a violation by verify()
        fault.recovered = await eventually(
            check, f"caught up after {fault.name}", within=RECOVERY_BOUND
        )


async def _stored(api: Api, writes: list[Write]) -> set[str]:
    """The acknowledged writes read back with the version they were acknowledged as."""
    limit = asyncio.Semaphore(16)

    async def read(write: Write) -> str | None:
        assert write.resource is not None
        path = write.resource.split("/_history/")[0]
        async with limit:
            status, body = await api.call("GET", path, base=write.seq % len(api.bases))
        if status == 200 and body is not None:
            return f"{path}/_history/{body['meta']['versionId']}"
        return None

    found = await asyncio.gather(*(read(w) for w in writes if w.resource is not None))
    return {r for r in found if r is not None}


async def _drained(api: Api, load: Load, receipts: Receipts) -> None:
    """Wait (bounded) until every acknowledged write was delivered and ran the bot."""
    acked = load.acknowledged

    def delivered() -> bool:
        receipts.refresh()
        return all(w.resource in receipts.first for w in acked)

    async def ran() -> bool:
        flagged = await _flagged(api)
        return all(w.resource and w.resource.split("/_history/")[0] in flagged for w in acked)

    with contextlib.suppress(AssertionError):  # what is missing is reported by verify()
        await eventually(delivered, "every write delivered", within=DRAIN_SECONDS)
        await eventually(ran, "every write's bot run", within=DRAIN_SECONDS)


async def run_chaos(rate: float = 5.0, *, log: Callable[[str], None] = print) -> Report:
    """Run the whole scenario and return its figures and violations.

    Args:
        rate: Writes a second of the steady load.
        log: Where progress lines go.
    """
    cluster = Cluster.make()
    failed = True
    began = time.monotonic()
    try:
        cluster.wire()
        with inside(cluster.network.nodes["client"].namespace):
            await cluster.start()
            log(f"chaos: cluster up in {time.monotonic() - began:.0f} s")
            report = await _scenario(cluster, rate, log)
        report.seconds = time.monotonic() - began
        failed = bool(report.violations)
        return report
    finally:
        if failed:
            log(cluster.tails())
        cluster.close()


async def _scenario(cluster: Cluster, rate: float, log: Callable[[str], None]) -> Report:
    api = Api(cluster.bases, cluster.token)
    receipts = Receipts(cluster.receipts_path)
    load = Load(api, rate, marker=f"urn:fhirbots:chaos:{cluster.network.run_id}")
    try:
        resthook, bot = await _set_up(api, cluster.receiver_url)
        await _warm_up(api, receipts)
        cluster.supervise()
        log("chaos: warmed up, load starts")
        load.start()

        async def kill(role: str) -> str:
            # A dispatcher holding the rest-hook's lane, so that the kill interrupts it.
            name = await cluster.holder(role, resthook) if role == "dispatcher" else f"{role}1"
            await cluster.restart(name)
            return f"kill -9 {name}"

        async def restart_broker() -> str:
            await cluster.restart_broker()
            return "restart Kafka broker (kill -9)"

        async def restart_postgres() -> str:
            await cluster.restart_postgres()
            return "restart PostgreSQL (kill -9)"

        async def cut() -> str:
            name = await cluster.holder("dispatcher", bot)  # the bot's lane
            await cluster.cut(name)
            return f"cut {name} network {CUT_SECONDS:g} s"

        faults: list[Callable[[], Awaitable[str]]] = [
            lambda: kill("api"),
            *(_bind(kill, role) for role in ROLES),
            restart_broker,
            restart_postgres,
            cut,
        ]
        done: list[Fault] = []
        steady = Fault("steady state", time.time(), time.time())
        await _caught_up(load, receipts, steady)
        for inject in faults:
            fault = Fault("", time.time())
            fault.name = await inject()
            fault.repaired = time.time()
            await _caught_up(load, receipts, fault)
            took = fault.recovery_seconds
            log(f"chaos: {fault.name}: recovered in {took or float('nan'):.1f} s")
            done.append(fault)
        await load.stop()
        await _drained(api, load, receipts)
        acked = load.acknowledged
        stored = await _stored(api, acked)
        flags = await api.every("Flag?_count=1000")
        receipts.refresh()
        report = verify(load.writes, stored, receipts.all, flags, done)
        report.revived = list(cluster.revived)
        return report
    finally:
        await load.stop()
        await api.close()


def _bind(action: Callable[[str], Awaitable[str]], name: str) -> Callable[[], Awaitable[str]]:
    return lambda: action(name)
