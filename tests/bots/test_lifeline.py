"""Children die with the engine: a ``kill -9`` of ``fhirbots serve`` ends every process it
started (validator pool, bot workers, the SQLite writer), and a child started through an
intermediate process ends once the engine is gone (the watching thread)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import child_env
from tests.engine.scenarios.process import free_port
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _commands(pids: set[int]) -> dict[int, bytes]:
    return {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids}


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_kill_9_of_serve_ends_every_child(tmp_path: Path) -> None:
    port = free_port()
    log_file = (tmp_path / "serve.log").open("wb")
    env = {k: v for k, v in child_env().items() if not k.startswith("FHIRBOTS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fhirbots.engine.cli.main",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log_file,
    )
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    return True
            except OSError:
                log = (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
                assert proc.returncode is None, f"serve exited:\n{log}"
                return False

        await eventually(lambda: asyncio.to_thread(ready), "serve to be ready")
        commands = _commands(_children(proc.pid))
        joined = b"\n".join(commands.values())
        # The SQLite writer, the validator pool and the bot workers are among them.
        assert b"sqlite_writes" in joined
        assert b"multiprocessing.spawn" in joined
        assert b"fhirbots.bots.lifeline" in joined
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        await eventually(
            lambda: not any(_running(pid) for pid in commands) or None,
            "every child of the killed server to end",
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log_file.close()


_INTERMEDIATE = """
import subprocess, sys
engine = int(sys.argv[1])
child = subprocess.Popen([sys.executable, "-c",
    "import sys, time; from fhirbots.bots.lifeline import follow_parent;"
    f"follow_parent({engine}); print('following', flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE)
print(child.pid, flush=True)
child.stdout.readline()
print("ready", flush=True)
child.wait()
"""


async def test_a_child_behind_an_intermediate_ends_with_the_engine() -> None:
    """The engine is a stand-in process; the child's parent is an intermediate that lives on,
    so only the watching thread can notice the engine is gone."""
    engine = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(600)"
    )
    middle = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _INTERMEDIATE,
        str(engine.pid),
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    try:
        assert middle.stdout is not None
        child = int(await middle.stdout.readline())
        assert await middle.stdout.readline() == b"ready\n"
        assert _running(child)
        engine.kill()
        await engine.wait()
        await eventually(lambda: not _running(child) or None, "the child to end")
        # The intermediate (the child's parent) ends only after its child did, normally: the
        # child's death signal cannot have ended it, the watching thread did.
        assert await middle.wait() == 0
    finally:
        for process in (engine, middle):
            if process.returncode is None:
                process.kill()
                await process.wait()
