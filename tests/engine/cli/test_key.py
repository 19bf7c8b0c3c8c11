"""``fhirbots project`` and ``fhirbots key`` as an operator runs them: real commands against a
real ``fhirbots serve``, the secrets they print used as keys, a scoped key held to its scope, a
revoked key refused."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fhirbots.engine.cli.key import READ_ONLY, parse_scopes, scope_text
from fhirbots.engine.web.auth import READ_ONLY as SERVER_READ_ONLY
from tests.engine.scenarios.process import ServedProcess, run_fhirbots, serve_process


def test_scopes_parse_and_add_up() -> None:
    assert parse_scopes([]) is None
    assert parse_scopes(["read-only"]) == {"interactions": sorted(READ_ONLY)}
    assert set(READ_ONLY) == SERVER_READ_ONLY
    both = parse_scopes(["read-only", "interactions=read,create", "types=Patient,Flag"])
    assert both == {"resourceTypes": ["Flag", "Patient"], "interactions": ["read"]}
    assert scope_text(both) == "types=Flag,Patient interactions=read"
    assert scope_text(None) == "all"
    for bad in ("write", "types=", "colour=red"):
        with pytest.raises(ValueError, match="expected read-only"):
            parse_scopes([bad])


async def fhirbots(
    served: ServedProcess, *argv: str, token: str | None = None
) -> tuple[int, str, str]:
    """Run a ``fhirbots`` client command against ``served``; (status, stdout, stderr)."""
    return await run_fhirbots(*argv, FHIRBOTS_URL=served.base, FHIRBOTS_TOKEN=token or served.token)


def status_of(url: str, key: str, method: str = "GET", body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/fhir+json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.integration
async def test_projects_and_keys_from_the_command_line(tmp_path: Path) -> None:
    async with serve_process(tmp_path / "data") as served:
        status, out, err = await fhirbots(served, "project", "create", "acme", "--title", "Acme")
        assert status == 0, err
        first = out.strip().splitlines()[-1]
        assert first.startswith("fhb_")
        status, out, _ = await fhirbots(served, "project", "list")
        assert status == 0 and "acme" in out and "Acme" in out
        patient = b'{"resourceType": "Patient"}'
        assert (
            await asyncio.to_thread(status_of, f"{served.base}/Patient", first, "POST", patient)
            == 201
        )
        # A project key is no operator.
        status, _, err = await fhirbots(served, "project", "create", "other", token=first)
        assert status == 1 and "403" in err
        status, _, err = await fhirbots(served, "key", "list", token=first)
        assert status == 1 and "403" in err

        status, out, err = await fhirbots(
            served,
            "key",
            "create",
            "--project",
            "acme",
            "--scope",
            "read-only",
            "--scope",
            "types=Patient",
        )
        assert status == 0, err
        reader = out.strip().splitlines()[-1]
        assert "types=Patient interactions=history,read,search,vread" in out
        assert await asyncio.to_thread(status_of, f"{served.base}/Patient", reader) == 200
        assert await asyncio.to_thread(status_of, f"{served.base}/Observation", reader) == 403
        assert (
            await asyncio.to_thread(status_of, f"{served.base}/Patient", reader, "POST", patient)
            == 403
        )

        status, out, _ = await fhirbots(served, "key", "list", "--project", "acme")
        assert status == 0
        lines = out.strip().splitlines()
        assert lines[0].split()[:3] == ["ID", "PROJECT", "NAME"]
        assert len(lines) == 3  # the header and acme's two keys
        assert first not in out and reader not in out
        reader_line = next(line for line in lines if "interactions=" in line)
        reader_id = reader_line.split()[0]

        status, out, err = await fhirbots(served, "key", "revoke", reader_id)
        assert status == 0, err
        assert f"key {reader_id} revoked" in out
        assert await asyncio.to_thread(status_of, f"{served.base}/Patient", reader) == 401
        assert await asyncio.to_thread(status_of, f"{served.base}/Patient", first) == 200
        status, out, _ = await fhirbots(served, "key", "list", "--project", "acme")
        revoked_line = next(line for line in out.splitlines() if line.startswith(reader_id))
        assert revoked_line.split()[5] != "-"  # the revoked column

        status, _, err = await fhirbots(
            served, "key", "create", "--project", "acme", "--scope", "paint"
        )
        assert status == 2 and "expected read-only" in err
        status, _, err = await fhirbots(served, "key", "revoke", "no-such-key")
        assert status == 1 and "404" in err
