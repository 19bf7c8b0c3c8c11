"""The escape corpus (``tests/bots/escape_corpus/``), run through one worker pool.

Each attempt runs in one project and must be refused (at compile time, or as an ``error``
result naming the refusal) or contained (``timeout``/``memory`` result, or a harmless
success); the next execution, in another project, must succeed and see pristine state.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fhirbots.bots.errors import BotCompileError
from fhirbots.bots.executor import ExecutionRequest
from fhirbots.bots.testing import BotHarness, make_bot
from tests.bots.escape_corpus import (
    Attempt,
    attributes,
    exhaustion,
    formatting,
    handler,
    host,
    legacy,
    modules,
    state,
)

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


ATTEMPTS: list[Attempt] = [
    *legacy.ATTEMPTS,
    *attributes.ATTEMPTS,
    *formatting.ATTEMPTS,
    *modules.ATTEMPTS,
    *state.ATTEMPTS,
    *exhaustion.ATTEMPTS,
    *host.ATTEMPTS,
]
"""The whole corpus (``tests/bots/escape_corpus/``), one table per class of attempt."""

ATTACKER, BYSTANDER = "attacker", "bystander"
"""The project every attempt runs in, and the one whose bot must be unaffected right after."""

BYSTANDER_SOURCE = """
import decimal
import math
def handler(fhir, event):
    return {"double": event.input * 2, "pi": round(math.pi, 2), "secrets": event.secrets,
            "printed": printed, "third": str(decimal.Decimal(1) / 3)}
"""


async def assert_bystander_unaffected(harness: BotHarness) -> None:
    """The next execution, in another project, succeeds and sees pristine state."""
    bot = make_bot(BYSTANDER_SOURCE, secret=["KEY"])
    result = await harness.executor.execute(
        ExecutionRequest(bot=bot, input=21, project=BYSTANDER, secrets={"KEY": "bystander"})
    )
    assert result.status == "success", result.error
    assert result.output == {
        "double": 42,
        "pi": 3.14,
        "secrets": {"KEY": "bystander"},
        "printed": "",
        "third": "0.3333333333333333333333333333",
    }


def test_corpus_is_large_enough() -> None:
    assert len(ATTEMPTS) >= 150
    assert len({a.name for a in ATTEMPTS}) == len(ATTEMPTS)


@MODULE_LOOP
@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
async def test_escape_attempt_is_refused_or_contained(
    harness: BotHarness, attempt: Attempt
) -> None:
    bot = make_bot(attempt.source, access=None)
    if attempt.expect == "compile":
        with pytest.raises(BotCompileError) as refused:
            await harness.run(bot, project=ATTACKER)
        messages = " ".join(p.message for p in refused.value.problems)
        assert attempt.detail in messages
        # The worker refuses it too when the deploy check is bypassed.
        direct = await harness.executor.execute(ExecutionRequest(bot=bot, project=ATTACKER))
        assert direct.status == "error"
        assert "refused" in (direct.error or "")
    else:
        result = await harness.run(bot, project=ATTACKER)
        assert result.status in attempt.expect.split("|"), (result.error, result.output)
        seen = f"{result.error} {result.output} {result.logs}"
        assert attempt.detail in seen
    await assert_bystander_unaffected(harness)


@MODULE_LOOP
async def test_secrets_of_one_bot_are_invisible_to_the_next(harness: BotHarness) -> None:
    keeper = make_bot(handler("return sorted(event.secrets)"), secret=["API_KEY"])
    snoop = make_bot(handler("return [event.secrets, printed]"))
    secrets = {"API_KEY": "s3cr3t", "OTHER": "hidden"}
    first = await harness.executor.execute(ExecutionRequest(bot=keeper, secrets=secrets))
    assert first.output == ["API_KEY"]
    for _ in range(4):  # reach both workers
        second = await harness.executor.execute(ExecutionRequest(bot=snoop, secrets=secrets))
        assert second.status == "success"
        assert "s3cr3t" not in repr(second.output)
        assert second.output == [{}, ""]


@MODULE_LOOP
async def test_module_state_does_not_leak_between_executions(harness: BotHarness) -> None:
    tamper = handler("decimal.getcontext().rounding = decimal.ROUND_DOWN", "import decimal")
    result = await harness.run(tamper)
    assert result.status == "error"
    check = handler("return [str(decimal.Decimal(2) / 3), math.pi]", "import decimal\nimport math")
    for _ in range(4):
        again = await harness.run(check)
        assert again.output == ["0.6666666666666666666666666667", 3.141592653589793]


def _process_facts(pid: int) -> tuple[bytes, int, str, str]:
    """Environment, open descriptors, resource-limit table and directory of a process."""
    proc = Path(f"/proc/{pid}")
    return (
        (proc / "environ").read_bytes(),
        len(os.listdir(proc / "fd")),
        (proc / "limits").read_text(),
        os.readlink(proc / "cwd"),
    )


@MODULE_LOOP
async def test_worker_holds_no_environment_or_extra_files(harness: BotHarness) -> None:
    for pid in harness.executor.worker_pids:
        environ, fds, table, cwd = _process_facts(pid)
        assert environ == b""
        assert cwd == "/"
        # stdin/stdout/stderr (now /dev/null) plus the two channel descriptors.
        assert fds <= 5
        address_space = next(line for line in table.splitlines() if "address space" in line)
        assert str(256 * 1024 * 1024) in address_space
        open_files = next(line for line in table.splitlines() if "open files" in line)
        assert open_files.split()[3] == "16"
        core = next(line for line in table.splitlines() if "core file size" in line)
        assert core.split()[4] == "0"
