"""Chooses the event-log adapter from the settings (built once at the entry point)."""

from __future__ import annotations

from pathlib import Path

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings
from fhirbots.engine.eventlog.kafka import KafkaEventLog, KafkaSettings
from fhirbots.engine.eventlog.port import EventLog, TopicSpec
from fhirbots.engine.eventlog.security import KafkaSecurity

__all__ = ["create_event_log"]


def create_event_log(
    *,
    kafka_bootstrap: str | None,
    data_dir: Path,
    client_id: str = "fhirbots",
    topics: tuple[TopicSpec, ...] = (),
    security: KafkaSecurity | None = None,
) -> EventLog:
    """Kafka when a bootstrap address is given, the embedded SQLite log otherwise.

    Args:
        kafka_bootstrap: ``host:port`` of Kafka brokers, or None for embedded mode.
        data_dir: Data dir of the embedded log (unused with Kafka).
        client_id: Kafka client id.
        topics: Topics created on ``start()``.
        security: TLS and SASL of the Kafka connections (none when None).

    Returns:
        An unstarted event log; call ``await log.start()``.
    """
    if kafka_bootstrap:
        return KafkaEventLog(
            KafkaSettings(
                bootstrap=kafka_bootstrap,
                client_id=client_id,
                topics=topics,
                security=security or KafkaSecurity(),
            )
        )
    return EmbeddedEventLog(EmbeddedSettings.in_data_dir(data_dir, topics=topics))
