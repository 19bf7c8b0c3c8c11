"""A dispatcher process killed (SIGKILL) mid-delivery: another one delivers the notification
after it, with the same event number."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

from aiohttp import web

from fhirbots.engine.delivery.store_sqlite import SqliteDeliveryStore
from tests.conftest import REPO_ROOT, child_env
from tests.engine.scenarios.delivery import PROJECT, Harness, Receiver
from tests.waiting import eventually

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from fhirbots.engine.observability.logs import configure_logging
    from fhirbots.engine.runtime import Engine
    from fhirbots.engine.settings import Settings

    async def main() -> None:
        configure_logging("WARNING")
        settings = Settings(data_dir=Path(sys.argv[1]), allowed_endpoint_networks=("127.0.0.1/32",))
        engine = Engine(settings)
        await engine.open()
        dispatcher = await engine.start_dispatcher()
        await dispatcher.wait_assigned()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_sigkill_mid_delivery_then_another_dispatcher_redelivers(
    harness: Harness, receiver: Receiver, tmp_path: Path
) -> None:
    hang = asyncio.Event()

    async def first_hangs(_: web.Request, count: int) -> web.Response:
        if count == 1:
            await hang.wait()
        return web.Response(status=200)

    receiver.on("/kill", first_hangs)
    await harness.subscription("s1", receiver.url + "/kill")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(harness.data_dir),
        env=child_env(FHIRBOTS_LOG_LEVEL="WARNING"),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert child.stdout is not None
        output = child.stdout

        async def ready() -> bool:
            line = await output.readline()
            assert line, "the dispatcher process ended before it was ready"
            return line.strip() == b"ready"

        await eventually(ready, "the dispatcher process to be ready")
        notes = [harness.notification("s1", receiver.url + "/kill") for _ in range(2)]
        await harness.publish(*notes)
        (first,) = await receiver.wait_for("/kill", 1)
        assert first.headers["X-Event-Number"] == "1"
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    hang.set()
    store = SqliteDeliveryStore(harness.data_dir / "delivery.db")
    await harness.start(store)
    got = await receiver.wait_for("/kill", 3)
    assert [r.headers["X-Event-Number"] for r in got] == ["1", "1", "2"]
    assert got[1].headers["X-Notification-Id"] == notes[0].notification_id

    async def delivered() -> bool:
        row = await store.get(PROJECT, notes[1].notification_id)
        return row is not None and row.state == "delivered"

    await eventually(delivered, "the second notification to be delivered")
