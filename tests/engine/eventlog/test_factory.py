from __future__ import annotations

from pathlib import Path

from fhirbots.engine.eventlog import EventLog, create_event_log
from fhirbots.engine.eventlog.embedded import EmbeddedEventLog
from fhirbots.engine.eventlog.kafka import KafkaEventLog
from fhirbots.engine.eventlog.port import TopicSpec


def test_embedded_without_bootstrap(tmp_path: Path) -> None:
    log = create_event_log(kafka_bootstrap=None, data_dir=tmp_path)
    assert isinstance(log, EmbeddedEventLog)
    assert isinstance(log, EventLog)
    assert log.settings.path.parent == tmp_path


def test_kafka_with_bootstrap(tmp_path: Path) -> None:
    topics = (TopicSpec("fhir.changes.v1", 12),)
    log = create_event_log(
        kafka_bootstrap="127.0.0.1:9092", data_dir=tmp_path, client_id="me", topics=topics
    )
    assert isinstance(log, KafkaEventLog)
    assert isinstance(log, EventLog)
    assert log.settings.client_id == "me"
    assert log.settings.topics == topics
