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
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.runtime import DEFAULT_PROJECT
from fhirbots.engine.stages.dispatcher import DISPATCHER_GROUP
from fhirbots.schemas.topics import NOTIFICATIONS
from tests.integration.chaos.checks import (
    AFTER_REPAIR,
    FLAG_SYSTEM,
    RECOVERY_BOUND,
    Fault,
    Report,
    verify,
)
from tests.integration.chaos.load import Api, Load, Write
from tests.integration.chaos.netns import Network, inside
from tests.integration.chaos.processes import (
    Broker,
    Postgres,
    Process,
    fhirbots_command,
    holders,
    python_env,
)
from tests.integration.chaos.receiver import Receipt, parse_receipt
from tests.waiting import eventually

__all__ = ["CUT_SECONDS", "ROLES", "run_chaos"]

ROLES = ("relay", "matcher", "dispatcher", "bots")
"""The worker roles; two processes of each run."""

API_PORT = 8080
RECEIVER_PORT = 8000

CUT_SECONDS = 20.0
"""How long the cut worker stays off the network."""

START_SECONDS = 180.0
"""Bound of the start-up (a broker and a dozen Python processes on a small machine)."""

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


class Receipts:
    """What the receiver wrote so far, read incrementally from its file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.all: list[Receipt] = []
        self.first: dict[str, float] = {}
        """Resource version -> when its first notification arrived."""
        self._offset = 0

    def refresh(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            receipt = parse_receipt(line)
            self.all.append(receipt)
            self.first.setdefault(receipt.resource, receipt.at)


@dataclass
class Cluster:
    """Every process of the run, on its network; :meth:`close` removes all of it."""

    network: Network
    folder: Path
    postgres: Postgres | None = None
    broker: Broker | None = None
    token: str = ""
    auto_migrate: bool = False

    def __post_init__(self) -> None:
        self.processes: dict[str, Process] = {}
        self.bases: list[str] = []

    @classmethod
    def make(cls) -> Cluster:
        return cls(Network(), Path(tempfile.mkdtemp(prefix="fhirbots-chaos-")))

    def _env(self) -> dict[str, str]:
        """The environment of every ``fhirbots`` process of the run."""
        assert self.postgres is not None and self.broker is not None
        return python_env(
            FHIRBOTS_DATABASE_URL=self.postgres.dsn,
            FHIRBOTS_KAFKA=self.broker.bootstrap,
            FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS=self.network.cidr,
            FHIRBOTS_BOT_WORKERS="1",
            FHIRBOTS_DELIVERY_AUTO_DISABLE_AFTER="0",
            FHIRBOTS_LOG_LEVEL="WARNING",
            **({"FHIRBOTS_AUTO_MIGRATE": "true"} if self.auto_migrate else {}),
        )

    def migrate(self) -> None:
        """``fhirbots migrate`` against the run's database, from the first API's namespace."""
        command = self.network.nodes["api1"].command(*fhirbots_command("migrate"))
        done = subprocess.run(command, env=self._env(), capture_output=True, text=True)
        if done.returncode == 2 and "invalid choice" in done.stderr:
            self.auto_migrate = True  # TODO: until `fhirbots migrate` lands
            return
        if done.returncode != 0:
            raise RuntimeError(f"fhirbots migrate failed:\n{done.stdout}\n{done.stderr}")

    def _fhirbots(self, name: str, *args: str) -> Process:
        node = self.network.nodes[name]
        env = self._env()
        data = self.folder / name
        data.mkdir()
        process = Process(
            name, node, fhirbots_command(*args, "--data-dir", str(data)), env, self.folder
        )
        self.processes[name] = process
        return process

    def _started(self, name: str) -> Callable[[], Awaitable[bool]]:
        """A check that the API process ``name`` answers /healthz (failing fast if it died)."""
        process = self.processes[name]
        url = f"http://{self.network.nodes[name].address}:{API_PORT}/healthz"

        async def check() -> bool:
            if reason := process.exited():
                raise AssertionError(reason)
            return await _answers(url)

        return check

    def wire(self) -> None:
        """Make the network: a namespace per process, and ``client`` for this one."""
        network = self.network
        network.open()
        for name in ("postgres", "kafka", "api1", "api2", "receiver", "client"):
            network.add(name)
        for role in ROLES:
            network.add(f"{role}1")
            network.add(f"{role}2")

    async def start(self) -> None:
        """Database, broker, API, workers and receiver, each waited for (called inside the
        ``client`` namespace: the waits connect to their addresses)."""
        network = self.network
        self.postgres = Postgres(network.nodes["postgres"], self.folder)
        self.broker = Broker(network.nodes["kafka"], self.folder / "kafka")
        await asyncio.gather(asyncio.to_thread(self.postgres.init), self._start_broker())
        await self._start_postgres()
        await asyncio.to_thread(self.postgres.create_database)
        await asyncio.to_thread(self.migrate)

        self._fhirbots("api1", "serve", "--api-only", "--host", network.nodes["api1"].address,
                       "--port", str(API_PORT)).start()  # fmt: skip
        await eventually(self._started("api1"), "api1 answering", within=START_SECONDS)
        self.token = (self.folder / "api1" / "admin-token").read_text().strip()
        self._fhirbots("api2", "serve", "--api-only", "--host", network.nodes["api2"].address,
                       "--port", str(API_PORT)).start()  # fmt: skip
        for role in ROLES:
            for n in (1, 2):
                self._fhirbots(f"{role}{n}", "worker", role).start()
        receiver = network.nodes["receiver"]
        self.processes["receiver"] = Process(
            "receiver",
            receiver,
            [*fhirbots_command()[:1], "-m", "tests.integration.chaos.receiver",
             receiver.address, str(RECEIVER_PORT), str(self.receipts_path)],
            python_env(),
            self.folder,
        )  # fmt: skip
        self.processes["receiver"].start()
        await eventually(self._started("api2"), "api2 answering", within=START_SECONDS)
        await eventually(
            lambda: _answers(f"{self.receiver_url}/"), "the receiver", within=START_SECONDS
        )
        self.bases = [
            f"http://{network.nodes[n].address}:{API_PORT}/fhir/R4" for n in ("api1", "api2")
        ]

    async def _start_broker(self) -> None:
        assert self.broker is not None
        await asyncio.to_thread(self.broker.start)

    async def _start_postgres(self) -> None:
        postgres = self.postgres
        assert postgres is not None
        postgres.process.start()

        async def ready() -> bool:
            if reason := postgres.process.exited():
                raise AssertionError(reason)
            return await asyncio.to_thread(postgres.ready)

        await eventually(ready, "PostgreSQL accepting connections", within=START_SECONDS)

    @property
    def receipts_path(self) -> Path:
        return self.folder / "receipts.jsonl"

    @property
    def receiver_url(self) -> str:
        return f"http://{self.network.nodes['receiver'].address}:{RECEIVER_PORT}"

    def tails(self) -> str:
        """The end of every process's log, for a failure."""
        parts = [f"--- {name}\n{p.tail(15)}" for name, p in sorted(self.processes.items())]
        if self.postgres is not None:
            parts.append(f"--- postgres\n{self.postgres.process.tail(15)}")
        broker_log = self.folder / "kafka" / "broker.log"
        if broker_log.exists():
            lines = broker_log.read_text(errors="replace").splitlines()[-15:]
            parts.append("--- kafka\n" + "\n".join(lines))
        return "\n".join(parts)

    def close(self) -> None:
        """Kill every process, delete the namespaces and the run's folder."""
        for process in self.processes.values():
            process.kill()
        if self.broker is not None:
            self.broker.close()
        if self.postgres is not None:
            self.postgres.close()
        self.network.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- faults ---------------------------------------------------------------------------

    async def restart(self, name: str) -> None:
        """``kill -9`` process ``name`` and start it again (an API process: until it answers)."""
        process = self.processes[name]
        process.kill()
        process.start()
        if name.startswith("api"):
            await eventually(self._started(name), f"{name} answering again")

    async def holder(self, role: str, subscription: str) -> str:
        """The worker of ``role`` consuming the notifications of ``subscription`` (the first
        one when the group is between assignments)."""
        assert self.broker is not None
        group = {"dispatcher": DISPATCHER_GROUP}[role]
        members = await holders(self.broker.bootstrap, group, NOTIFICATIONS)
        partitions = len(set().union(*members.values())) or 1
        partition = partition_for(f"{DEFAULT_PROJECT}/{subscription}", partitions)
        for n in (1, 2):
            node = self.network.nodes[f"{role}{n}"]
            if partition in members.get(node.address, set()):
                return node.name
        return f"{role}1"

    async def restart_broker(self) -> None:
        assert self.broker is not None
        await asyncio.to_thread(self.broker.kill)
        await self._start_broker()

    async def restart_postgres(self) -> None:
        assert self.postgres is not None
        self.postgres.crash()
        await self._start_postgres()

    async def cut(self, name: str) -> None:
        node = self.network.nodes[name]
        self.network.cut(node)
        try:
            await asyncio.sleep(CUT_SECONDS)  # the fault itself lasts this long
        finally:
            self.network.mend(node)


async def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 (any failure to connect is a "not yet")."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as resp,
        ):
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


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
    """Wait until every write sent up to :data:`AFTER_REPAIR` seconds after ``fault`` was
    repaired is answered and, when acknowledged, delivered (at least one acknowledged after
    the repair): the backlog the fault built is drained and new writes flow again. The
    recovery ends with the last of those deliveries."""
    horizon = fault.repaired + AFTER_REPAIR
    pending: list[Write] | None = None

    def check() -> float | None:
        nonlocal pending
        if time.time() < horizon:
            return None
        if pending is None:
            pending = [w for w in load.writes if w.sent <= horizon]
        if any(w.status is None and w.error is None for w in pending):
            return None  # still in flight
        receipts.refresh()
        pending = [
            w for w in pending if w.resource is not None and w.resource not in receipts.first
        ]
        if pending:
            return None
        window = [w for w in load.writes if w.sent <= horizon and w.resource is not None]
        if not any(w.sent >= fault.repaired for w in window):
            return None
        return max(receipts.first[w.resource] for w in window if w.resource is not None)

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
        return verify(load.writes, stored, receipts.all, flags, done)
    finally:
        await load.stop()
        await api.close()


def _bind(action: Callable[[str], Awaitable[str]], name: str) -> Callable[[], Awaitable[str]]:
    return lambda: action(name)
