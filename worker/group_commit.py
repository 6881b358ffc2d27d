"""Group commit: calls from several threads that meet a flush in flight go out together in the next one.

    commit = GroupCommit(flush)        # flush(items) -> one result per item, in order
    result = commit(item)              # from any thread

A call that finds no flush in flight flushes its item at once (no timer, so a lone call waits for
nothing). Calls made while a flush runs wait; when it ends, one of them flushes every item queued
meanwhile, in arrival order, and each caller gets its own result, or the flush's exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    __slots__ = ("item", "result", "error", "done")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit(Generic[Item, Result]):
    """`flush(items) -> results` run for the items of the calls that waited for the previous flush."""

    def __init__(self, flush: Callable[[list[Item]], Sequence[Result]]) -> None:
        self._flush = flush
        self._cond = threading.Condition()
        self._queued: list[_Slot[Item, Result]] = []
        self._flushing = False
        self.flushes = 0  # how many flushes ran (tests, logs)

    def __call__(self, item: Item) -> Result:
        slot: _Slot[Item, Result] = _Slot(item)
        batch = None
        with self._cond:
            self._queued.append(slot)
            while self._flushing and not slot.done:
                self._cond.wait()
            if not slot.done:  # no flush in flight: this thread flushes what is queued
                batch, self._queued, self._flushing = self._queued, [], True
        if batch is not None:
            self._run(batch)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, batch: list[_Slot[Item, Result]]) -> None:
        try:
            results = self._flush([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"group commit: {len(results)} results for {len(batch)} items")
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        except BaseException as exc:  # every caller of the batch gets it
            for slot in batch:
                slot.error = exc
        finally:
            with self._cond:
                for slot in batch:
                    slot.done = True
                self._flushing = False
                self.flushes += 1
                self._cond.notify_all()
