"""The sandbox policy: what bot code may import and how much it may consume.

A :class:`SandboxPolicy` is frozen data, built once at the entry point and passed to
:func:`fhirbots.bots.compile.compile_bot` and :class:`fhirbots.bots.executor.ProcessBotExecutor`.
Change it with the copy-builders (``policy.with_timeout(30)``), never by mutation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from fhirbots.bots.errors import PolicyError

__all__ = ["DEFAULT_ALLOWED_MODULES", "MIB", "EffectiveLimits", "SandboxPolicy"]

MIB = 1024 * 1024
"""One mebibyte, the unit of memory limits."""

DEFAULT_ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "collections",
        "datetime",
        "decimal",
        "functools",
        "itertools",
        "json",
        "math",
        "re",
        "statistics",
        "string",
        "uuid",
        "zoneinfo",
    }
)
"""Pure computation modules without file, process or network access. Bots see them through
proxies that hide submodules and the few members that reach further (see
:mod:`fhirbots.bots._modules`)."""


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """The limits applied to one execution: the policy's, tightened by the bot's own settings."""

    timeout_seconds: float
    """Wall-clock budget, FHIR calls included."""
    cpu_seconds: int
    """CPU seconds the worker may spend on this execution."""
    memory_bytes: int
    """Address-space ceiling of the worker during this execution."""


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    """Limits and allow-lists of the bot sandbox.

    Every refusal names the field that caused it and the copy-builder that relaxes it.
    """

    allowed_modules: frozenset[str] = field(default=DEFAULT_ALLOWED_MODULES)
    """Modules a bot may ``import`` (exact names; submodules are never importable).
    Default: :data:`DEFAULT_ALLOWED_MODULES`. Relax with :meth:`with_modules`."""

    timeout_seconds: float = 10.0
    """Default and ceiling of an execution's wall-clock time, FHIR calls included. When it
    passes, the worker is killed and replaced and the result has status ``timeout``. A bot's
    own ``timeout`` can only lower it. Default 10 s (Medplum's default bot timeout).
    Relax with :meth:`with_timeout`."""

    cpu_seconds: int = 10
    """CPU seconds per execution (``RLIMIT_CPU`` of the worker, re-armed before each run).
    Exceeding it kills the worker (status ``timeout``). Default 10 s.
    Relax with :meth:`with_cpu_seconds`."""

    memory_bytes: int = 512 * MIB
    """Address-space ceiling of a worker (``RLIMIT_AS``), interpreter included (about 60 MiB
    of it). An allocation beyond it fails and the result has status ``memory``. A bot's own
    ``memoryLimit`` can only lower it. Default 512 MiB. Relax with :meth:`with_memory`."""

    max_open_files: int = 16
    """``RLIMIT_NOFILE`` of a worker: its channel plus a few for time-zone data files.
    Default 16."""

    forbid_processes: bool = True
    """Set ``RLIMIT_NPROC`` to 0 in workers so they cannot fork (ignored when the engine runs
    as root, where the kernel does not enforce it; the import allow-list still applies)."""

    max_output_bytes: int = 1 * MIB
    """Largest return value, serialised as JSON. A larger one gives status ``error``.
    Default 1 MiB. Relax with :meth:`with_output_limit`."""

    max_log_bytes: int = 64 * 1024
    """Captured ``print`` and ``logger`` text per execution; beyond it lines are dropped and
    a truncation marker is appended. Default 64 KiB. Relax with :meth:`with_log_limit`."""

    max_source_bytes: int = 256 * 1024
    """Largest bot source accepted at deploy. Default 256 KiB."""

    max_fhir_calls: int = 1000
    """FHIR calls one execution may make; the next one raises ``FhirError`` (429)."""

    max_message_bytes: int = 16 * MIB
    """Largest single frame on a worker's channel (a FHIR request or a result). A worker
    sending more is killed. Default 16 MiB."""

    pool_size: int = 2
    """Pre-warmed worker processes, i.e. concurrent executions. Default 2 (one per core of a
    small host). Change with :meth:`with_pool_size`."""

    max_executions_per_worker: int = 10_000
    """A worker is replaced after this many executions, bounding slow leaks."""

    code_cache_size: int = 256
    """Compiled bots (by source digest) each worker keeps; the least recently used goes."""

    spare_workers: int = 1
    """Clean workers (that served no project yet) kept ready besides the ``pool_size`` busy
    ones, so that an execution of a project without a worker of its own starts at once
    instead of waiting for one to be started. After a clean worker is taken, the least
    recently used idle worker of another project is retired to make the next spare. Each is
    one more process. 0: none (a project switch waits for a worker to start)."""

    project_concurrency: int = 0
    """Executions of one project running at once, i.e. its share of the workers; 0 (the
    default) means half of ``pool_size``, rounded up. The other workers stay free for other
    projects however many bots one project starts. See :attr:`project_share`."""

    project_queue: int = 64
    """Executions of one project that may wait for its share before the API's ``$execute``
    is refused (429 with ``Retry-After``). Subscription and cron runs are never refused: they
    wait in order."""

    def __post_init__(self) -> None:
        """Refuse impossible values, naming the field."""
        positive = {
            "timeout_seconds": self.timeout_seconds,
            "cpu_seconds": self.cpu_seconds,
            "memory_bytes": self.memory_bytes,
            "max_open_files": self.max_open_files,
            "max_output_bytes": self.max_output_bytes,
            "max_log_bytes": self.max_log_bytes,
            "max_source_bytes": self.max_source_bytes,
            "max_message_bytes": self.max_message_bytes,
            "pool_size": self.pool_size,
            "max_executions_per_worker": self.max_executions_per_worker,
            "code_cache_size": self.code_cache_size,
            "project_queue": self.project_queue,
        }
        for name, value in positive.items():
            if value <= 0:
                raise PolicyError(f"SandboxPolicy.{name} must be positive, got {value!r}")
        # A result (output plus logs, up to 4 UTF-8 bytes a character) must fit in one frame.
        if self.max_message_bytes < self.max_output_bytes + 4 * self.max_log_bytes + 4096:
            raise PolicyError(
                "SandboxPolicy.max_message_bytes must exceed max_output_bytes + "
                "4 * max_log_bytes + 4096 so that a result fits in one message"
            )
        if self.spare_workers < 0:
            raise PolicyError("SandboxPolicy.spare_workers must be >= 0")
        if self.project_concurrency < 0:
            raise PolicyError("SandboxPolicy.project_concurrency must be >= 0 (0: half the pool)")
        if self.max_fhir_calls < 0:
            raise PolicyError("SandboxPolicy.max_fhir_calls must be >= 0")
        if self.memory_bytes < 64 * MIB:
            # Below this the interpreter itself cannot start in the worker.
            raise PolicyError("SandboxPolicy.memory_bytes must be at least 64 MiB")
        bad = [m for m in self.allowed_modules if not m or "." in m or m.startswith("_")]
        if bad:
            raise PolicyError(
                f"SandboxPolicy.allowed_modules holds names that cannot be allowed: {sorted(bad)}"
                " (top-level, non-underscore module names only)"
            )

    def with_timeout(self, seconds: float) -> SandboxPolicy:
        """Copy with another wall-clock timeout per execution."""
        return dataclasses.replace(self, timeout_seconds=seconds)

    def with_cpu_seconds(self, seconds: int) -> SandboxPolicy:
        """Copy with another CPU-time limit per execution."""
        return dataclasses.replace(self, cpu_seconds=seconds)

    def with_memory(self, memory_bytes: int) -> SandboxPolicy:
        """Copy with another worker address-space ceiling."""
        return dataclasses.replace(self, memory_bytes=memory_bytes)

    def with_modules(self, *names: str) -> SandboxPolicy:
        """Copy that also allows importing ``names``."""
        return dataclasses.replace(self, allowed_modules=self.allowed_modules | set(names))

    def without_modules(self, *names: str) -> SandboxPolicy:
        """Copy that no longer allows importing ``names``."""
        return dataclasses.replace(self, allowed_modules=self.allowed_modules - set(names))

    def with_output_limit(self, max_bytes: int) -> SandboxPolicy:
        """Copy with another cap on the serialised return value."""
        return dataclasses.replace(self, max_output_bytes=max_bytes)

    def with_log_limit(self, max_bytes: int) -> SandboxPolicy:
        """Copy with another cap on captured print/logger text."""
        return dataclasses.replace(self, max_log_bytes=max_bytes)

    def with_pool_size(self, workers: int) -> SandboxPolicy:
        """Copy with another number of pre-warmed workers."""
        return dataclasses.replace(self, pool_size=workers)

    def with_spare_workers(self, workers: int) -> SandboxPolicy:
        """Copy with another number of clean workers kept ready."""
        return dataclasses.replace(self, spare_workers=workers)

    def with_project_share(self, concurrency: int, queue: int | None = None) -> SandboxPolicy:
        """Copy with another per-project share of the workers (and queue length)."""
        return dataclasses.replace(
            self,
            project_concurrency=concurrency,
            project_queue=self.project_queue if queue is None else queue,
        )

    @property
    def project_share(self) -> int:
        """Executions of one project at once: :attr:`project_concurrency`, or half the pool."""
        if self.project_concurrency:
            return min(self.project_concurrency, self.pool_size)
        return max(1, math.ceil(self.pool_size / 2))

    def limits_for(
        self, timeout_seconds: float | None = None, memory_bytes: int | None = None
    ) -> EffectiveLimits:
        """Limits of one execution: the bot's own values, capped by this policy.

        Args:
            timeout_seconds: the bot's ``timeout``, if it sets one.
            memory_bytes: the bot's ``memoryLimit`` in bytes, if it sets one.
        """
        timeout = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        memory = self.memory_bytes if memory_bytes is None else memory_bytes
        timeout = min(timeout, self.timeout_seconds)
        return EffectiveLimits(
            timeout_seconds=timeout,
            cpu_seconds=max(1, min(self.cpu_seconds, int(timeout) + 1)),
            memory_bytes=max(64 * MIB, min(memory, self.memory_bytes)),
        )
