#!/usr/bin/env python3
"""The image's HEALTHCHECK: exit 0 when this container's process answers ``/readyz``.

A worker answers on its management port (``FHIRBOTS_MANAGEMENT_PORT``), the API on its own
port (``FHIRBOTS_PORT``, 8080 by default). Standard library only, so the check needs no
package the image does not already have.
"""

import os
import sys
import urllib.request


def readiness_url() -> str:
    """The ``/readyz`` URL of the process this container runs."""
    port = os.environ.get("FHIRBOTS_MANAGEMENT_PORT") or os.environ.get("FHIRBOTS_PORT") or "8080"
    return f"http://127.0.0.1:{port}/readyz"


def main() -> int:
    url = readiness_url()
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (fixed http URL)
            status = response.status
    except OSError as exc:  # refused, timed out, or an HTTP error status
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"not ready: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
