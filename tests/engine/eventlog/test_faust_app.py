from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fhirbots.engine.eventlog.faust_app import FaustSettings, Stage, StageContext, build_app
from fhirbots.engine.eventlog.port import OutgoingMessage, Record


def record(key: str) -> Record:
    return Record("src", 0, 0, key, b"v", (), datetime.now(UTC))


class DefaultZero(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 0


def test_context_counts_per_current_key() -> None:
    table = DefaultZero()
    a = StageContext(table, record("a"))
    assert a.increment() == 1
    assert a.increment(by=4) == 5
    b = StageContext(table, record("b"))
    assert b.increment() == 1
    assert b.count() == 1
    assert b.count("a") == 5
    assert table == {"a": 5, "b": 1}


async def handler(ctx: StageContext, rec: Record) -> list[OutgoingMessage]:
    return [OutgoingMessage(rec.key, b"%d" % ctx.increment())]


def test_build_app_registers_agent_and_changelog_table(tmp_path: Path) -> None:
    settings = FaustSettings(
        app_id="unit-app", bootstrap="127.0.0.1:1", data_dir=tmp_path / "faust", partitions=3
    )
    app = build_app(settings, Stage(name="numbering", source="in", sink="out", handler=handler))
    assert "numbering" in app.agents
    table = app.tables["numbering-counters"]
    assert table.partitions == 3
    assert table.changelog_topic.get_topic_name() == "unit-app-numbering-counters-changelog"
    assert app.conf.broker_consumer[0].port == 1
    assert (tmp_path / "faust").is_dir()
