"""The processes of the chaos run, each started inside its node's namespace: a private
PostgreSQL cluster, a single-node KRaft broker (``deploy/kafka/broker.sh``), ``fhirbots``
API and worker processes and the rest-hook receiver.

Every process leads a process group of its own, so that ``kill -9`` and the final clean-up
reach what it started (a sandbox worker of a bot, the broker's JVM) and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from tests.conftest import REPO_ROOT, child_env
from tests.integration.chaos.netns import Node

__all__ = ["Broker", "Postgres", "Process", "fhirbots_command", "holders", "progress"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
"""Debian's PostgreSQL server binaries."""

PG_USER = "postgres"
"""The account the cluster runs as (PostgreSQL refuses to run as root)."""

BROKER_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "broker.sh"

STOP_SECONDS = 20.0
"""How long a process may take to exit after SIGTERM before it is killed."""


def _group_running(group: int) -> bool:
    """Whether a process of process group ``group`` is still running (not a zombie)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


class Process:
    """One long-running process in a node's namespace, restartable.

    Args:
        name: Its name in the figures and log file names.
        node: The namespace it runs in.
        argv: The command.
        env: Its environment.
        logs: Folder of its output (``<name>.log``, appended to across restarts).
        user: Run as this account instead of root.
    """

    def __init__(
        self,
        name: str,
        node: Node,
        argv: list[str],
        env: dict[str, str],
        logs: Path,
        *,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.node = node
        self.argv = argv
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.user = user
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start it (again)."""
        prefix = as_user(self.user) if self.user else []
        argv = self.node.command(*prefix, *self.argv)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        """Whether it was started and has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def exited(self) -> str | None:
        """Why it is not running (for a wait that should fail at once), else None."""
        if self.popen is None or self.popen.poll() is None:
            return None
        return f"{self.name} exited with {self.popen.returncode}; its log:\n{self.tail()}"

    def tail(self, lines: int = 30) -> str:
        """The end of its log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to its process group."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """``kill -9`` its process group and reap it; returns once no process of the group is
        left running (a killed PostgreSQL's backends hold its shared memory until they end,
        and a server started before that refuses to start)."""
        if self.popen is not None:
            self.signal(signal.SIGKILL)
            self.popen.wait()
            group = self.popen.pid
            deadline = time.monotonic() + STOP_SECONDS
            while _group_running(group) and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after :data:`STOP_SECONDS`; then anything left of its group."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_SECONDS)
        self.kill()


def as_user(user: str) -> list[str]:
    """The prefix that runs a command as ``user`` (setpriv execs it in place)."""
    return ["setpriv", "--reuid", user, "--regid", user, "--init-groups"]


def fhirbots_command(*args: str) -> list[str]:
    """``fhirbots ARGS`` with this checkout's code."""
    return [sys.executable, "-m", "fhirbots.engine.cli.main", *args]


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a Python process of the run: this checkout first on its path, no
    settings inherited from the caller's environment."""
    env = {k: v for k, v in child_env(**extra).items() if not k.startswith("FHIRBOTS_")}
    env.update(extra)
    return env


class Postgres:
    """A PostgreSQL cluster of the run's own, in ``node``'s namespace, on its address.

    Its data folder is made with :func:`tempfile.mkdtemp` (the server's account must be able
    to reach it) and removed by :meth:`close`. Trust authentication: the address exists only
    inside the run's namespaces.
    """

    PORT = 5432

    def __init__(self, node: Node, logs: Path) -> None:
        self.node = node
        self.folder = Path(tempfile.mkdtemp(prefix="fhirbots-chaos-pg-"))
        self.data = self.folder / "data"
        account = pwd.getpwnam(PG_USER)
        os.chown(self.folder, account.pw_uid, account.pw_gid)
        self.process = Process(
            "postgres",
            node,
            [
                str(PG_BIN / "postgres"),
                "-D", str(self.data),
                "-c", f"listen_addresses={node.address}",
                "-c", f"port={self.PORT}",
                "-c", f"unix_socket_directories={self.folder}",
                "-c", "max_connections=300",
                # Durable against a killed server (the page cache survives it), not against a
                # machine that loses power: nothing here outlives the run.
                "-c", "fsync=off",
                "-c", "full_page_writes=off",
            ],
            {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
            logs,
            user=PG_USER,
        )  # fmt: skip

    @property
    def dsn(self) -> str:
        """The DSN of the engine's database."""
        return f"postgresql://{PG_USER}@{self.node.address}:{self.PORT}/fhirbots"

    def init(self) -> None:
        """Create the cluster (initdb)."""
        command = [
            *as_user(PG_USER), str(PG_BIN / "initdb"), "-D", str(self.data), "-U", PG_USER,
            "--auth=trust", "-E", "UTF8", "--no-sync",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}\n{done.stderr}")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")

    def ready(self) -> bool:
        """Whether the server accepts connections (pg_isready in its namespace)."""
        command = self.node.command(
            str(PG_BIN / "pg_isready"),
            "-q",
            "-U",
            PG_USER,
            "-h",
            self.node.address,
            "-p",
            str(self.PORT),
        )
        return subprocess.run(command, check=False).returncode == 0

    def create_database(self) -> None:
        """Create the engine's database."""
        command = self.node.command(
            *as_user(PG_USER), str(PG_BIN / "createdb"),
            "-h", self.node.address, "-p", str(self.PORT), "-U", PG_USER, "fhirbots",
        )  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"createdb failed: {done.stderr}")

    def crash(self) -> None:
        """``kill -9`` the postmaster and its backends (a crash: recovery on the next start)."""
        self.process.kill()
        # The backends are children of the postmaster, in its process group.

    def close(self) -> None:
        """Stop the server (immediate shutdown) and remove its files."""
        if self.process.alive:
            self.process.signal(signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert self.process.popen is not None
                self.process.popen.wait(STOP_SECONDS)
        self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class Broker:
    """A single-node KRaft broker in ``node``'s namespace, listening on its address, started
    and checked by ``deploy/kafka/broker.sh`` (state in a folder of its own)."""

    PORT = 9092

    def __init__(self, node: Node, state: Path) -> None:
        self.node = node
        self.state = state
        self.env = {
            **os.environ,
            "KAFKA_HOST": node.address,
            "KAFKA_PORT": str(self.PORT),
            "KAFKA_STATE_DIR": str(state),
            "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        }

    @property
    def bootstrap(self) -> str:
        """``host:port`` for FHIRBOTS_KAFKA."""
        return f"{self.node.address}:{self.PORT}"

    def start(self) -> None:
        """Start it; returns once it answers (broker.sh waits for that)."""
        command = self.node.command("bash", str(BROKER_SCRIPT), "start")
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=180, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"broker start failed:\n{done.stdout}\n{done.stderr}")

    def kill(self) -> None:
        """``kill -9`` the broker (its JVM leads a process group of its own)."""
        pidfile = self.state / "broker.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(pidfile.read_text().strip())
            os.killpg(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)

    def close(self) -> None:
        """Kill it; its state folder goes with the run's folder."""
        self.kill()


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (the broker is not our child)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def holders(bootstrap: str, group: str, topic: str) -> dict[str, set[int]]:
    """Address of each live member of consumer ``group`` and the partitions of ``topic`` it is
    assigned (each process of the run connects from its own address)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    found: dict[str, set[int]] = {}
    for response in responses:
        for described in response.to_object()["groups"]:
            for member in described["members"]:
                raw = member["member_assignment"]
                assigned = ConsumerProtocolMemberAssignment.decode(raw).assignment if raw else []
                host = str(member["client_host"]).lstrip("/")
                found.setdefault(host, set()).update(
                    p for name, parts in assigned if name == topic for p in parts
                )
    return found


async def progress(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(records of ``topic`` consumer ``group`` has committed, records in ``topic``); (0, 0)
    while the broker cannot tell yet (no coordinator for a group that never committed)."""
    try:
        return await _progress(bootstrap, group, topic)
    except KafkaError:
        return 0, 0


async def _progress(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        [described] = await admin.describe_topics([topic])
        parts = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
        await admin.close()
    done = sum(max(meta.offset, 0) for tp, meta in committed.items() if tp.topic == topic)
    return done, sum(ends.values())
