"""Child processes that die with the engine that started them.

Worker processes (bot sandbox workers, the validator pool, the SQLite writer) must not outlive
the engine: orphans of a killed server hold memory, the database files, and a sandbox worker
may even hold a tenant's code. Each child calls :func:`follow_parent` first thing, with the
pid of the engine that started it:

* on Linux it asks the kernel for ``SIGKILL`` when its parent ends
  (``prctl(PR_SET_PDEATHSIG)``), which covers ``kill -9`` of the engine;
* if the parent is already gone (it died before the request was made), the child ends at once;
* if the child's parent is not the engine (started through a fork server or another
  intermediate, or not on Linux), a daemon thread looks for the engine every
  :data:`WATCH_SECONDS` and ends the child once it is gone.

The kernel's signal is sent when the *thread* that forked the child ends, so children are
started from threads that live as long as their use: the event loop's (bot workers, the
validator pool), asyncio's default executor (the SQLite writer's first start; its threads end
only when the loop closes) and the SQLite writer thread (a restarted writer).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["WATCH_SECONDS", "follow_parent"]

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal a process gets when its parent ends (linux/prctl.h)."""

WATCH_SECONDS = 1.0
"""How often the fallback thread looks for the engine."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _request_death_signal() -> bool:
    """Ask the kernel for SIGKILL when the parent ends; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # only where prctl exists

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(engine_pid: int) -> None:
    stop = threading.Event()
    while not stop.wait(WATCH_SECONDS):
        if not _alive(engine_pid):
            _die()


def follow_parent(engine_pid: int) -> None:
    """Make this process end when the process ``engine_pid`` (the engine) ends."""
    direct = _request_death_signal() and os.getppid() == engine_pid
    if direct:
        return  # the kernel signals us; checked after the request, so no death is missed
    if os.getppid() != engine_pid and not _alive(engine_pid):
        _die()  # the engine ended before we could ask
    threading.Thread(target=_watch, args=(engine_pid,), name="lifeline", daemon=True).start()
