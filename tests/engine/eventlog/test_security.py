"""TLS and SASL of the Kafka clients: the settings map to aiokafka's and faust's arguments, and a
real broker started here with a SASL_PLAINTEXT (PLAIN) listener and an SSL listener (a
certificate from a throwaway CA) takes the event log's producer, admin client and consumers
through real handshakes, and refuses a wrong password."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fhirbots.engine.eventlog.errors import BrokerError
from fhirbots.engine.eventlog.kafka import KafkaEventLog, KafkaSettings
from fhirbots.engine.eventlog.port import OutgoingMessage, Record
from fhirbots.engine.eventlog.security import KafkaSecurity
from fhirbots.engine.settings import Settings
from tests.certificates import Certificates, make_certificates
from tests.engine.scenarios.process import free_port

REPO = Path(__file__).resolve().parents[3]
KAFKA_LIB = REPO / "deploy" / "kafka" / "lib"
USER, PASSWORD = "fhirbots", "s3cret-pw"


def test_plaintext_by_default() -> None:
    assert KafkaSecurity().client_args() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity().faust_credentials() is None


def test_sasl_arguments_and_the_password_kept_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "FHIRBOTS_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
            "FHIRBOTS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FHIRBOTS_KAFKA_SASL_USERNAME": USER,
            "FHIRBOTS_KAFKA_SASL_PASSWORD": PASSWORD,
        }
    )
    security = KafkaSecurity.from_settings(settings)
    assert security.client_args() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": USER,
        "sasl_plain_password": PASSWORD,
    }
    assert PASSWORD not in repr(security)
    assert PASSWORD not in repr(settings)
    credentials = security.faust_credentials()
    assert type(credentials).__name__ == "SASLCredentials"


def test_tls_checks_the_broker_against_the_ca(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    security = KafkaSecurity(protocol="SASL_SSL", cafile=certificates.ca)
    args = security.client_args()
    assert args["ssl_context"].check_hostname is True
    assert args["security_protocol"] == "SASL_SSL"
    assert type(security.faust_credentials()).__name__ == "SASLCredentials"
    assert type(KafkaSecurity(protocol="SSL").faust_credentials()).__name__ == "SSLCredentials"


def test_unknown_protocols_and_mechanisms_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="FHIRBOTS_KAFKA_SECURITY_PROTOCOL must be one of"):
        Settings.from_env({"FHIRBOTS_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ValueError, match="FHIRBOTS_KAFKA_SASL_MECHANISM must be one of"):
        Settings.from_env({"FHIRBOTS_KAFKA_SASL_MECHANISM": "GSSAPI"})


@dataclass(frozen=True)
class SecureBroker:
    """A broker with a SASL_PLAINTEXT (PLAIN) listener and an SSL listener."""

    sasl: str
    ssl: str
    certificates: Certificates


def _broker_config(state: Path, ports: list[int], certificates: Certificates) -> Path:
    sasl, controller, tls, internal = ports
    keystore = state / "keystore.pem"  # PEM keystore: the key (PKCS#8) and the certificate
    keystore.write_text(certificates.key.read_text() + certificates.cert.read_text())
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{USER}="{PASSWORD}";'
    )
    config = state / "server.properties"
    config.write_text(
        f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_PLAINTEXT://127.0.0.1:{sasl},SSL://127.0.0.1:{tls},INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{sasl},SSL://127.0.0.1:{tls},INTERNAL://127.0.0.1:{internal}
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.client.auth=none
log.dirs={state / "data"}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""
    )
    return config


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    state = tmp_path_factory.mktemp("secure-kafka")
    certificates = make_certificates(state / "tls")
    ports = [free_port() for _ in range(4)]
    config = _broker_config(state, ports, certificates)
    classpath = f"{KAFKA_LIB}/*"
    java = ["java", "-Xms128m", "-Xmx384m", "-cp", classpath]
    cluster = subprocess.run(
        [*java, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True
    ).stdout.split()[-1]
    subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = (state / "broker.log").open("wb")
    broker = subprocess.Popen(
        [*java, "kafka.Kafka", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120  # bounds only a broker that never starts
        while not all(_listening(port) for port in (ports[0], ports[2])):
            assert broker.poll() is None, (state / "broker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the secure broker did not start"
            time.sleep(0.2)
        yield SecureBroker(
            sasl=f"127.0.0.1:{ports[0]}", ssl=f"127.0.0.1:{ports[2]}", certificates=certificates
        )
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
        log.close()


async def _round_trip(bootstrap: str, security: KafkaSecurity) -> None:
    """Create a topic, publish and read back a record, through a consumer group too."""
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    log = KafkaEventLog(KafkaSettings(bootstrap=bootstrap, security=security))
    await log.start()
    try:
        await log.create_topic(topic, 1)
        await log.ping()
        await log.publish_many(topic, [OutgoingMessage(key="k", value=b"over TLS or SASL")])
        records = await log.read(topic, 0, offset=0)
        assert [r.value for r in records] == [b"over TLS or SASL"]
        handled: list[bytes] = []
        done = asyncio.Event()

        async def handler(batch: list[Record]) -> None:
            handled.extend(r.value for r in batch)
            done.set()

        member = await log.consume([topic], f"group-{topic}", handler)
        await asyncio.wait_for(done.wait(), 60)  # bounds only a failure
        assert handled == [b"over TLS or SASL"]
        await member.stop()
        assert await log.lag(f"group-{topic}") == {(topic, 0): 0}
    finally:
        await log.stop()


@pytest.mark.integration
async def test_sasl_plain_handshake(secure_broker: SecureBroker) -> None:
    await _round_trip(
        secure_broker.sasl,
        KafkaSecurity(
            protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username=USER,
            sasl_password=PASSWORD,
        ),
    )


@pytest.mark.integration
async def test_tls_handshake_checks_the_certificate(secure_broker: SecureBroker) -> None:
    await _round_trip(
        secure_broker.ssl, KafkaSecurity(protocol="SSL", cafile=secure_broker.certificates.ca)
    )


@pytest.mark.integration
async def test_wrong_password_is_refused(secure_broker: SecureBroker) -> None:
    wrong = KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_username=USER, sasl_password="not-the-password"
    )
    log = KafkaEventLog(KafkaSettings(bootstrap=secure_broker.sasl, security=wrong))
    with pytest.raises(BrokerError):
        await log.start()
    await log.stop()


if os.environ.get("FHIRBOTS_TEST_KAFKA"):  # an outside broker has no secure listeners here
    pytestmark = pytest.mark.skip(reason="secure broker tests start their own broker")
