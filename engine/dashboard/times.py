"""How the dashboard writes a moment, on its pages and in its JSON alike."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["instant"]


def instant(moment: datetime) -> str:
    """ISO 8601 in UTC ending in ``Z`` (microseconds only when it has any).

    Pages cut it at the seconds for display; scripts pass it back as is (``before=``).
    """
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
