"""worker.group_commit: a lone call flushes at once; calls made during a flush go out together in the next."""

from __future__ import annotations

import threading

import pytest

from tests.worker.waiting import wait_until
from worker.group_commit import GroupCommit


def test_a_lone_call_is_flushed_at_once_with_its_own_result():
    batches = []
    commit = GroupCommit(lambda items: batches.append(list(items)) or [item * 10 for item in items])
    assert commit(1) == 10
    assert commit(2) == 20
    assert batches == [[1], [2]] and commit.flushes == 2


def test_calls_made_during_a_flush_go_out_together_in_the_next_in_arrival_order():
    release = threading.Event()
    batches = []

    def flush(items):
        batches.append(list(items))
        if items == ["a"]:
            release.wait(5)
        return [f"{item}!" for item in items]

    commit = GroupCommit(flush)
    results = {}
    threads = []
    for k, item in enumerate(["a", "b", "c", "d"]):
        thread = threading.Thread(target=lambda item=item: results.__setitem__(item, commit(item)))
        thread.start()
        threads.append(thread)
        if item == "a":
            wait_until(lambda: batches == [["a"]])
        else:
            wait_until(lambda n=k: len(commit._queued) == n)  # queued in this order
    release.set()
    for thread in threads:
        thread.join(5)
    assert batches == [["a"], ["b", "c", "d"]]
    assert results == {"a": "a!", "b": "b!", "c": "c!", "d": "d!"}
    assert commit.flushes == 2


def test_every_caller_of_a_failed_flush_gets_its_exception_and_the_next_flush_runs():
    release = threading.Event()
    calls = []

    def flush(items):
        calls.append(list(items))
        if items == ["first"]:
            release.wait(5)
            return ["ok"]
        if "bad" in items:
            raise ConnectionError("redis went away")
        return [item.upper() for item in items]

    commit = GroupCommit(flush)
    errors = []
    first = threading.Thread(target=commit, args=("first",))
    first.start()
    wait_until(lambda: calls == [["first"]])

    def call(item):
        try:
            commit(item)
        except ConnectionError as exc:
            errors.append((item, str(exc)))

    others = [threading.Thread(target=call, args=(item,)) for item in ("bad", "other")]
    for k, thread in enumerate(others):
        thread.start()
        wait_until(lambda n=k + 1: len(commit._queued) == n)
    release.set()
    for thread in [first, *others]:
        thread.join(5)
    assert calls == [["first"], ["bad", "other"]]
    assert sorted(errors) == [("bad", "redis went away"), ("other", "redis went away")]
    assert commit("after") == "AFTER"


def test_a_flush_returning_the_wrong_number_of_results_fails_its_callers():
    commit = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        commit("x")
