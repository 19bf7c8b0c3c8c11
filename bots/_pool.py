"""Worker processes seen from the engine: spawn, talk to, kill.

Each worker is a fresh ``python -I`` interpreter with an empty environment (no variable that
could carry a secret), its own session (terminal signals do not reach it) and no file
descriptors but stdin/stdout, which form its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import fhirbots
from fhirbots.bots._protocol import HEADER, ChannelClosedError, FrameTooLargeError, decode, encode
from fhirbots.bots.errors import BotError
from fhirbots.bots.policy import SandboxPolicy

__all__ = ["STARTUP_TIMEOUT_SECONDS", "WorkerLostError", "WorkerProcess"]

STARTUP_TIMEOUT_SECONDS = 60.0
"""A cold interpreter imports the sandbox in well under a second; a loaded 2-core CI host
can be 50x slower, and a worker that takes longer is broken."""

_PACKAGE_ROOT = str(Path(fhirbots.__file__).parent.parent)

_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); from fhirbots.bots.lifeline import "
    "follow_parent; follow_parent(int(sys.argv[2])); from fhirbots.bots._worker import main; "
    "main()"
)
"""``-I`` drops the current directory from sys.path; the package root is passed explicitly, and
so is the engine's pid: a worker ends with the engine (:mod:`fhirbots.bots.lifeline`)."""


class WorkerLostError(BotError):
    """The worker died or broke the protocol; it must be replaced."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode

    @property
    def signal_name(self) -> str | None:
        """Name of the signal that ended the worker, if one did."""
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


def _policy_message(policy: SandboxPolicy) -> dict[str, Any]:
    fields = dataclasses.asdict(policy)
    fields["allowed_modules"] = sorted(policy.allowed_modules)
    return fields


class WorkerProcess:
    """One worker and its channel."""

    def __init__(self, process: asyncio.subprocess.Process, policy: SandboxPolicy) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self.pid = process.pid
        self._writer = process.stdin
        self._reader = process.stdout
        self._max_frame = policy.max_message_bytes
        self._cache_size = policy.code_cache_size
        self._digests: OrderedDict[str, None] = OrderedDict()
        self.executions = 0
        self.project: str | None = None
        """The only project this worker ever serves (None until its first execution)."""

    @classmethod
    async def spawn(cls, policy: SandboxPolicy) -> WorkerProcess:
        """Start a worker and wait until it is ready."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            _BOOTSTRAP,
            _PACKAGE_ROOT,
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={},
            cwd="/",  # nothing relative to the engine's directory
            close_fds=True,
            start_new_session=True,
        )
        worker = cls(process, policy)
        try:
            await worker.send({"op": "init", "policy": _policy_message(policy)})
            async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
                ready = await worker.receive()
        except BaseException:
            await worker.kill()
            raise
        if ready.get("op") != "ready":
            await worker.kill()
            raise WorkerLostError(f"worker sent {ready.get('op')!r} instead of ready")
        return worker

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.returncode is None

    def knows(self, digest: str) -> bool:
        """Whether this worker was sent the code of ``digest`` recently (it may still ask)."""
        if digest in self._digests:
            self._digests.move_to_end(digest)
            return True
        return False

    def remember(self, digest: str) -> None:
        """Note that the worker now holds the code of ``digest``."""
        self._digests[digest] = None
        if len(self._digests) > self._cache_size:
            self._digests.popitem(last=False)

    async def send(self, message: dict[str, Any]) -> None:
        """Write one message; a broken pipe means the worker is gone.

        Raises:
            TypeError: the message holds something that is not JSON.
            FrameTooLargeError: it is larger than the policy's ``max_message_bytes``.
            WorkerLostError: the worker is gone.
        """
        frame = encode(message)
        if len(frame) - HEADER.size > self._max_frame:
            raise FrameTooLargeError(
                f"message of {len(frame)} bytes exceeds SandboxPolicy.max_message_bytes "
                f"({self._max_frame})"
            )
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise await self._lost(f"channel broken: {exc}") from exc

    async def receive(self) -> dict[str, Any]:
        """Read one message; end of file means the worker is gone."""
        try:
            header = await self._reader.readexactly(HEADER.size)
            (size,) = HEADER.unpack(header)
            if size > self._max_frame:
                raise FrameTooLargeError(f"worker sent a frame of {size} bytes")
            return decode(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, ChannelClosedError, ConnectionError) as exc:
            raise await self._lost("worker exited") from exc
        except (FrameTooLargeError, ValueError) as exc:
            await self.kill()
            raise WorkerLostError(
                f"worker broke the protocol: {exc}", self.process.returncode
            ) from exc

    async def _lost(self, message: str) -> WorkerLostError:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.process.wait()
        if self.process.returncode is None:
            await self.kill()
        return WorkerLostError(message, self.process.returncode)

    async def kill(self) -> None:
        """Kill the worker at once and reap it."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(Exception):
            self._writer.close()
        await self.process.wait()

    async def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not within a second."""
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.send({"op": "stop"})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await self.process.wait()
        await self.kill()
