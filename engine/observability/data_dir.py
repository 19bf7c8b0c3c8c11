"""The data dir of a server process: private to its user, and held by one engine at a time.

The data dir holds the SQLite databases (with their ``-wal`` and ``-shm`` files), the embedded
event log, bot secrets and the admin API key: nothing in it is for other users of the host.
:func:`secure` makes it 0700 and every file in it 0600, on creation and at every start (a
looser mode found at start is tightened and logged as a warning; one the process may not change,
such as a volume's root owned by root, is logged and left), and :data:`UMASK` (set by the server
commands) gives the files the engine creates later the same modes.

:class:`DataDirLock` is an exclusive ``flock`` on ``<data dir>/lock``, held for the life of the
process (the kernel releases it when the process ends, however it ends): a second embedded
engine on the same data dir refuses to start with :class:`DataDirInUse`, naming the data dir
and the holder's pid (written into the file).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path
from types import TracebackType

import structlog

from fhirbots.schemas.errors import FhirbotsError

__all__ = ["DIR_MODE", "FILE_MODE", "LOCK_FILE", "UMASK", "DataDirInUse", "DataDirLock", "secure"]

log = structlog.get_logger(__name__)

DIR_MODE = 0o700
"""The data dir and the folders in it: the engine's user only."""

FILE_MODE = 0o600
"""Every file in the data dir."""

UMASK = 0o077
"""What a server process creates (databases, their journals, logs) is its user's only."""

LOCK_FILE = "lock"
"""The file in the data dir an engine holds locked while it runs."""


class DataDirInUse(FhirbotsError):
    """Another process holds the data dir."""


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.lstat().st_mode)
    if not current & ~mode & 0o777:
        return
    try:
        os.chmod(path, current & mode)
    except PermissionError:
        # Not ours to change (a volume mounted by root, e.g. an emptyDir): what the engine
        # creates inside is still private through the umask.
        log.warning("data_dir.permissions_not_tightened", path=str(path), mode=oct(current))
        return
    log.warning(
        "data_dir.permissions_tightened", path=str(path), was=oct(current), now=oct(current & mode)
    )


def secure(data_dir: Path) -> None:
    """Create ``data_dir`` (0700) if missing, and take group and other access away from it and
    from everything in it (folders 0700 at most, files 0600 at most), logging each change."""
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(data_dir, DIR_MODE)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs:
            path = Path(root, name)
            if not path.is_symlink():
                _tighten(path, DIR_MODE)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                _tighten(path, FILE_MODE)


class DataDirLock:
    """An exclusive lock on ``<data_dir>/lock`` (use as ``with``); the holder's pid is written
    into the file.

    Raises:
        DataDirInUse: on entering, when another process (or another engine of this one) holds
            it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> DataDirLock:
        self.data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"the data dir {self.data_dir} is in use by another fhirbots process "
                f"(pid {holder}, holding {self.path}); stop it or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None
