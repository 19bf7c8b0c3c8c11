"""TLS of the API port (``FHIRBOTS_TLS_CERTFILE`` and ``FHIRBOTS_TLS_KEYFILE``)."""

from __future__ import annotations

import ssl

from fhirbots.engine.settings import Settings

__all__ = ["api_tls_context"]


def api_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context of the API (TLS 1.2 or later), or None for plain HTTP.

    Raises:
        ValueError: only one of the two files is set, or they do not load; the message names
            the variables.
    """
    certfile, keyfile = settings.tls_certfile, settings.tls_keyfile
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        raise ValueError("FHIRBOTS_TLS_CERTFILE and FHIRBOTS_TLS_KEYFILE must be set together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"FHIRBOTS_TLS_CERTFILE / FHIRBOTS_TLS_KEYFILE ({certfile}, {keyfile}) do not "
            f"load: {exc}"
        ) from exc
    return context
