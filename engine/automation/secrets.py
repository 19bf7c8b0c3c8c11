"""Project secrets that bots may read (``Bot.secret`` names which ones).

Minimal by design: one JSON object per project in ``<data dir>/secrets/<project>.json``
(``{"LAB_API_KEY": "..."}``), read at each execution so an edit takes effect at once, never
stored as a FHIR resource (so never in a change event, a search or a history). An execution
hands the bot only the names its ``secret`` list allows. In distributed mode every process
that runs bots needs the same folder (mount it as a Kubernetes Secret, for example).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import orjson
import structlog

__all__ = ["SECRETS_DIR", "DirectorySecrets", "SecretSource"]

SECRETS_DIR = "secrets"
"""Folder of the secret files inside the data dir."""

_PROJECT = re.compile(r"^[A-Za-z0-9\-_.]{1,64}$")
"""Project ids that are safe file names (no path separators)."""

_log = structlog.get_logger(__name__)


class SecretSource(Protocol):
    """Where an execution's project secrets come from."""

    async def secrets(self, project: str) -> dict[str, str]:
        """Every secret of ``project`` (the executor filters them per bot)."""
        ...


class DirectorySecrets:
    """Secrets from ``<folder>/<project>.json``; a missing file means no secrets.

    Args:
        folder: The folder holding one file per project.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def secrets(self, project: str) -> dict[str, str]:
        """The project's secrets; an unreadable or malformed file counts as none (logged)."""
        if not _PROJECT.match(project):
            return {}
        path = self.folder / f"{project}.json"
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            _log.warning("bot secrets file unreadable", path=str(path), error=str(exc))
            return {}
        if not isinstance(data, dict):
            _log.warning("bot secrets file is not a JSON object", path=str(path))
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)}
