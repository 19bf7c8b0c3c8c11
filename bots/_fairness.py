"""Per-project admission to the worker pool: a bounded share of the workers, a bounded queue.

Before an execution asks for a worker, it takes one of its project's *slots*. A project holds
at most ``limit`` slots at once (by default half the pool, rounded up), so however many bots
one project starts, the other workers stay free for other projects. Executions over the
limit wait in their project's queue, first come first served. A caller that may be refused
(``bounded=True``: the API's ``$execute``) gets :class:`fhirbots.bots.errors.ProjectBusyError`
when ``queue_limit`` executions already wait; the others (subscription deliveries, cron) always
wait their turn, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from fhirbots.bots.errors import ProjectBusyError

__all__ = ["ProjectSlots"]


@dataclass
class _Project:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class ProjectSlots:
    """Slots per project; see the module docstring.

    Args:
        limit: executions of one project running (or waiting for a worker) at once.
        queue_limit: executions of one project waiting for a slot before bounded callers
            are refused.
        retry_after: seconds a refused caller is told to wait.
    """

    def __init__(self, limit: int, queue_limit: int, retry_after: int) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self.retry_after = retry_after
        self._projects: dict[str, _Project] = {}

    def running(self, project: str) -> int:
        """Slots ``project`` holds now."""
        state = self._projects.get(project)
        return state.running if state is not None else 0

    def waiting(self, project: str) -> int:
        """Executions of ``project`` waiting for a slot."""
        state = self._projects.get(project)
        return sum(not f.done() for f in state.waiting) if state is not None else 0

    async def acquire(self, project: str, *, bounded: bool) -> None:
        """Take a slot of ``project``, waiting in its queue if it holds all of its share.

        Raises:
            ProjectBusyError: ``bounded`` and the project's queue is full.
        """
        state = self._projects.setdefault(project, _Project())
        if state.running < self.limit and not state.waiting:
            state.running += 1
            return
        if bounded and self.waiting(project) >= self.queue_limit:
            raise ProjectBusyError(
                f"project {project!r} already runs {state.running} bot executions (its share "
                f"of the workers) and {self.queue_limit} more wait; retry later",
                self.retry_after,
            )
        turn = asyncio.get_running_loop().create_future()
        state.waiting.append(turn)
        try:
            await turn  # release() hands its slot over: running stays counted
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(project)  # the slot was ours already: pass it on
            else:
                state.waiting.remove(turn)
            raise

    def release(self, project: str) -> None:
        """Give a slot back: to the first execution waiting in the queue, if any."""
        state = self._projects[project]
        while state.waiting:
            turn = state.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        state.running -= 1
        if state.running == 0:
            del self._projects[project]
