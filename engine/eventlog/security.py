"""How every Kafka client of the engine connects: TLS and SASL from the settings.

One :class:`KafkaSecurity`, built once from the ``FHIRBOTS_KAFKA_*`` settings, gives the
keyword arguments of every aiokafka client (producer, consumers, admin client) and the
``broker_credentials`` of the faust app, so that no client connects differently.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhirbots.engine.settings import Settings

__all__ = ["KafkaSecurity"]


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SASL of the connections to the brokers (Kafka's own names and values).

    Attributes:
        protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` (SASL protocols).
        sasl_username: SASL user.
        sasl_password: SASL password (never shown in ``repr``).
        cafile: CA bundle the brokers' certificates are checked against; the system's when
            None.
        certfile: Client certificate for mutual TLS.
        keyfile: Key of ``certfile``.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        """The security the ``FHIRBOTS_KAFKA_*`` settings ask for."""
        return cls(
            protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )

    @property
    def uses_tls(self) -> bool:
        """Whether connections are encrypted."""
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        """Whether clients authenticate with SASL."""
        return self.protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context checking the brokers' certificates and host names (with the
        client certificate when one is configured); None without TLS."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.cafile) if self.cafile is not None else None
        )
        if self.certfile is not None:
            context.load_cert_chain(
                str(self.certfile), str(self.keyfile) if self.keyfile is not None else None
            )
        return context

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments of an aiokafka client (producer, consumer, admin)."""
        args: dict[str, Any] = {"security_protocol": self.protocol}
        context = self.ssl_context()
        if context is not None:
            args["ssl_context"] = context
        if self.uses_sasl:
            args.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return args

    def faust_credentials(self) -> object | None:
        """faust's ``broker_credentials`` for this security; None for ``PLAINTEXT``."""
        # Imported here: only the faust worker loads faust.
        from faust.auth import SASLCredentials, SSLCredentials

        if self.uses_sasl:
            return SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),
            )
        context = self.ssl_context()
        return SSLCredentials(context) if context is not None else None
