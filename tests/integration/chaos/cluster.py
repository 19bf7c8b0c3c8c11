"""The processes of a distributed deployment on a private network of namespaces: PostgreSQL,
the broker, API processes, workers and the rest-hook receiver, started, waited for, faulted
and removed. Used by the chaos run (:mod:`.scenario`) and ``bench/sizing.py``."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.runtime import DEFAULT_PROJECT
from fhirbots.engine.stages.dispatcher import DISPATCHER_GROUP
from fhirbots.schemas.topics import NOTIFICATIONS
from tests.integration.chaos.netns import Network, Node
from tests.integration.chaos.processes import (
    Broker,
    Postgres,
    Process,
    fhirbots_command,
    holders,
    python_env,
)
from tests.waiting import eventually

__all__ = ["API_PORT", "CUT_SECONDS", "NODES", "ROLES", "Cluster", "answers"]

ROLES = ("relay", "matcher", "dispatcher", "bots")
"""The worker roles."""

NODES = ("api1", "api2", "receiver", *(f"{role}{n}" for role in ROLES for n in (1, 2)))
"""The processes of the chaos run: two API processes and two workers of each role."""

API_PORT = 8080
RECEIVER_PORT = 8000
MANAGEMENT_PORT = 9000
"""Each worker's /livez, /readyz and /metrics (every process has an address of its own)."""

CUT_SECONDS = 20.0
"""How long a cut process stays off the network."""

SUPERVISOR_SECONDS = 0.5
"""How often the supervisor looks for processes that exited."""

START_SECONDS = 180.0
"""Bound of a start-up (a broker and a dozen Python processes on a small machine)."""


@dataclass
class Cluster:
    """Every process of the run, on its network; :meth:`close` removes all of it."""

    network: Network
    folder: Path
    postgres: Postgres | None = None
    broker: Broker | None = None
    token: str = ""

    def __post_init__(self) -> None:
        self.processes: dict[str, Process] = {}
        self.bases: list[str] = []
        self.revived: list[str] = []
        """Processes the supervisor started again after they exited on their own."""
        self._supervisor: asyncio.Task[None] | None = None

    @classmethod
    def make(cls) -> Cluster:
        return cls(Network(), Path(tempfile.mkdtemp(prefix="fhirbots-chaos-")))

    def _env(self, node: Node) -> dict[str, str]:
        """The environment of a ``fhirbots`` process of the run on ``node``."""
        assert self.postgres is not None and self.broker is not None
        return python_env(
            FHIRBOTS_HOST=node.address,
            FHIRBOTS_DATABASE_URL=self.postgres.dsn,
            FHIRBOTS_KAFKA=self.broker.bootstrap,
            FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS=self.network.cidr,
            FHIRBOTS_BOT_WORKERS="1",
            FHIRBOTS_DELIVERY_AUTO_DISABLE_AFTER="0",
            FHIRBOTS_LOG_LEVEL="WARNING",
        )

    def migrate(self) -> None:
        """``fhirbots migrate`` against the run's database, from the first API's namespace."""
        node = self.network.nodes["api1"]
        command = node.command(*fhirbots_command("migrate"))
        done = subprocess.run(command, env=self._env(node), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"fhirbots migrate failed:\n{done.stdout}\n{done.stderr}")

    def _fhirbots(self, name: str, *args: str) -> Process:
        node = self.network.nodes[name]
        env = self._env(node)
        data = self.folder / name
        data.mkdir()
        process = Process(
            name, node, fhirbots_command(*args, "--data-dir", str(data)), env, self.folder
        )
        self.processes[name] = process
        return process

    def _ready(self, name: str) -> Callable[[], Awaitable[bool]]:
        """A check that process ``name`` is ready (its ``/readyz`` answers 200: database,
        event log and consumer assignment), failing fast if it exited (unless the supervisor
        runs: then it is started again)."""
        process = self.processes[name]
        port = API_PORT if name.startswith("api") else MANAGEMENT_PORT
        url = f"http://{self.network.nodes[name].address}:{port}/readyz"

        async def check() -> bool:
            if reason := process.exited():
                if self._supervisor is None:
                    raise AssertionError(reason)
                return False  # the supervisor starts it again
            return await answers(url)

        return check

    def wire(self, names: Sequence[str] = NODES) -> None:
        """Make the network: the services' namespaces, one per process of ``names``, and
        ``client`` for this one."""
        self.network.open()
        for name in ("postgres", "kafka", "client", *names):
            self.network.add(name)

    async def start(self) -> None:
        """Everything of the chaos run: services, both API processes, two workers of each
        role, the receiver (called inside the ``client`` namespace, as are all waits here:
        they connect to the processes' addresses)."""
        await self.start_services()
        await self.start_api("api1")
        self.start_api_process("api2")
        for role in ROLES:
            for n in (1, 2):
                self.start_worker(f"{role}{n}", role)
        self.start_receiver()
        for name in self.processes:
            if name != "receiver":
                await self.ready(name)
        await self.receiver_ready()

    async def start_services(self) -> None:
        """PostgreSQL with the engine's database migrated, and the broker."""
        network = self.network
        self.postgres = Postgres(network.nodes["postgres"], self.folder)
        self.broker = Broker(network.nodes["kafka"], self.folder / "kafka")
        await asyncio.gather(asyncio.to_thread(self.postgres.init), self._start_broker())
        await self._start_postgres()
        await asyncio.to_thread(self.postgres.create_database)
        await asyncio.to_thread(self.migrate)

    def start_api_process(self, name: str) -> None:
        """Start ``fhirbots serve --api-only`` on node ``name`` (not waited for)."""
        node = self.network.nodes[name]
        command = ("serve", "--api-only", "--host", node.address, "--port", str(API_PORT))
        self._fhirbots(name, *command).start()
        self.bases.append(f"http://{node.address}:{API_PORT}/fhir/R4")

    async def start_api(self, name: str) -> None:
        """Start an API process and wait until it answers; the first one's admin key is the
        run's."""
        self.start_api_process(name)
        await self.ready(name)
        if not self.token:
            self.token = (self.folder / name / "admin-token").read_text().strip()

    def start_worker(self, name: str, role: str) -> Process:
        """Start ``fhirbots worker ROLE`` on node ``name`` (not waited for)."""
        process = self._fhirbots(name, "worker", role, "--management-port", str(MANAGEMENT_PORT))
        process.start()
        return process

    async def ready(self, name: str) -> None:
        """Wait until process ``name`` is ready."""
        await eventually(self._ready(name), f"{name} ready", within=START_SECONDS)

    def start_receiver(self) -> None:
        """Start the rest-hook receiver (see :meth:`receiver_ready`)."""
        receiver = self.network.nodes["receiver"]
        self.processes["receiver"] = Process(
            "receiver",
            receiver,
            [sys.executable, "-m", "tests.integration.chaos.receiver",
             receiver.address, str(RECEIVER_PORT), str(self.receipts_path)],
            python_env(),
            self.folder,
        )  # fmt: skip
        self.processes["receiver"].start()

    async def receiver_ready(self) -> None:
        """Wait until the receiver answers."""
        await eventually(
            lambda: answers(f"{self.receiver_url}/"), "the receiver", within=START_SECONDS
        )

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

    def supervise(self) -> None:
        """Start again any process of the engine that exits on its own, as an orchestrator
        would (``restart: always``): a worker that finds the broker or the database away
        while it starts exits with an error."""

        async def watch() -> None:
            while True:
                for name, process in self.processes.items():
                    if process.exited():
                        self.revived.append(name)
                        process.start()
                await asyncio.sleep(SUPERVISOR_SECONDS)

        self._supervisor = asyncio.create_task(watch(), name="chaos-supervisor")

    def close(self) -> None:
        """Kill every process, delete the namespaces and the run's folder."""
        if self._supervisor is not None:
            self._supervisor.cancel()
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
        """``kill -9`` process ``name`` and start it again, until it is ready."""
        process = self.processes[name]
        process.kill()
        process.start()
        await self.ready(name)

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


async def answers(url: str) -> bool:
    """Whether ``url`` answers 200 (any failure to connect is a "not yet")."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as resp,
        ):
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
