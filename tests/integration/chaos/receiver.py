"""The rest-hook endpoint of the chaos run: a real aiohttp server that appends one JSON line per
notification to a file (flushed before it answers 200, so every acknowledged delivery is on
record) and answers ``GET /`` for readiness.

    python -m tests.integration.chaos.receiver HOST PORT FILE
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import IO

import orjson
from aiohttp import web

__all__ = ["Receipt", "Receipts", "parse_receipt"]

HEADERS = ("X-Event-Number", "X-Subscription-Id", "X-Notification-Id")


class Receipt:
    """One notification the receiver got: its event number and what it was about."""

    __slots__ = ("at", "event_number", "notification_id", "resource", "subscription")

    def __init__(
        self,
        at: float,
        subscription: str,
        event_number: int,
        notification_id: str,
        resource: str,
    ) -> None:
        self.at = at
        self.subscription = subscription
        self.event_number = event_number
        self.notification_id = notification_id
        self.resource = resource
        """``Type/id/_history/version`` of the resource in the body."""


def parse_receipt(line: bytes) -> Receipt:
    """A line of the receiver's file."""
    data = orjson.loads(line)
    return Receipt(
        data["at"], data["subscription"], int(data["event"]), data["id"], data["resource"]
    )


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


def _app(out: IO[bytes]) -> web.Application:
    async def notified(request: web.Request) -> web.Response:
        body = await request.read()
        resource = orjson.loads(body) if body else {}
        version = (resource.get("meta") or {}).get("versionId", "")
        line = {
            "at": time.time(),
            "subscription": request.headers.get(HEADERS[1], ""),
            "event": request.headers.get(HEADERS[0], "0"),
            "id": request.headers.get(HEADERS[2], ""),
            "resource": f"{resource.get('resourceType')}/{resource.get('id')}/_history/{version}",
        }
        out.write(orjson.dumps(line) + b"\n")
        out.flush()
        return web.Response(status=200)

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application()
    app.router.add_post("/notify", notified)
    app.router.add_get("/", ready)
    return app


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("file")
    args = parser.parse_args()
    with open(args.file, "ab") as out:
        web.run_app(_app(out), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
