"""Tests of compressed request bodies: inflated within the body bound, refused clearly."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest

from fhirbots.engine.api.request_body import inflate
from fhirbots.engine.errors import BadRequest, UnsupportedMediaType
from fhirbots.engine.fhir.limits import PayloadTooLarge
from fhirbots.engine.settings import API_PATH
from tests.engine.conftest import Api

PATIENT = orjson.dumps({"resourceType": "Patient", "name": [{"family": "Inflated"}]})


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(PATIENT)),
        ("x-gzip", gzip.compress(PATIENT)),
        ("deflate", zlib.compress(PATIENT)),
        ("deflate", raw_deflate(PATIENT)),
    ],
)
def test_inflate_takes_gzip_and_both_deflates(encoding: str, body: bytes) -> None:
    assert inflate(body, encoding, 1024) == PATIENT


def test_inflate_stops_at_the_bound_however_much_more_there_is() -> None:
    bomb = gzip.compress(b" " * (50 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="FHIRBOTS_MAX_REQUEST_BYTES"):
        inflate(bomb, "gzip", 1024 * 1024)


@pytest.mark.parametrize(
    ("encoding", "body", "error"),
    [
        ("gzip", b"not gzip at all", BadRequest),
        ("gzip", gzip.compress(PATIENT)[:-12], BadRequest),
        ("br", b"...", UnsupportedMediaType),
        ("compress", b"...", UnsupportedMediaType),
    ],
    ids=["not-gzip", "cut-short", "brotli", "compress"],
)
def test_inflate_refuses_what_it_cannot_read(
    encoding: str, body: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        inflate(body, encoding, 1024)


@pytest.mark.integration
async def test_a_gzip_body_is_written_and_a_bomb_is_refused(api: Api) -> None:
    headers = api.headers(**{"Content-Encoding": "gzip"})
    created = await api.client.post(
        f"{API_PATH}/Patient", data=gzip.compress(PATIENT), headers=headers
    )
    assert created.status == 201
    assert (await created.json())["name"][0]["family"] == "Inflated"
    limit = api.engine.settings.max_request_bytes
    bomb = gzip.compress(b" " * (limit + 1))
    refused = await api.client.post(f"{API_PATH}/Patient", data=bomb, headers=headers)
    assert refused.status == 413
    body = await refused.json()
    assert "inflates to more than" in body["issue"][0]["diagnostics"]
