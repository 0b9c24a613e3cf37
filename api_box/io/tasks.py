"""An owner for fire-and-forget tasks (worker DropSession calls): bounded, logged, cancelled at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

_LOG = logging.getLogger("api_box.tasks")


class TaskSet:
    """Background tasks owned by the app; beyond `limit` running tasks new ones are refused (and closed)."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> bool:
        """Run `coro` in the background; False (and the coroutine closed) when full or closed."""
        if self._closed or len(self._tasks) >= self._limit:
            coro.close()
            return False
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _LOG.warning("background task failed", exc_info=task.exception())

    async def close(self) -> None:
        """Cancel every task and wait for them."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
