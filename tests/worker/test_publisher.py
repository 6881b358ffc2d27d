"""JobPublisher: numbering, chunking by count and age, first token at once, resume skipping; the thread."""

from __future__ import annotations

import threading

import fakeredis

from worker.publisher import JobPublisher, Publisher
from worker.schemas import Usage
from worker.streams import read_log


def publisher(**kw) -> JobPublisher:
    args = dict(next_seq=2, skip_tokens=0, chunk_tokens=3, chunk_ms=50.0) | kw
    return JobPublisher("j", **args)


def summary(events) -> list[tuple]:
    return [(e.seq, e.type, getattr(e, "index", None), getattr(e, "ids", None), getattr(e, "text", None))
            for e in events]


def test_first_token_goes_out_at_once_then_chunks_by_count():
    jp = publisher()
    jp.started("w", 1.0, 1, now=10.0)
    jp.token(5, "a", None, now=10.0)
    assert summary(jp.take(10.0)) == [(2, "started", None, None, None), (3, "tokens", 0, [5], "a")]
    for i, t in enumerate((6, 7)):
        jp.token(t, "bc"[i], None, now=10.001)
    assert jp.take(10.002) == [] and jp.due_at() == 10.001 + 0.05
    jp.token(8, "d", None, now=10.003)  # third buffered token: due now
    assert summary(jp.take(10.003)) == [(4, "tokens", 1, [6, 7, 8], "bcd")]


def test_chunk_due_by_age():
    jp = publisher()
    jp.token(1, "x", None, now=0.0)
    jp.take(0.0)
    jp.token(2, "y", None, now=1.0)
    assert jp.take(1.049) == []
    assert summary(jp.take(1.05)) == [(3, "tokens", 1, [2], "y")]


def test_a_late_take_still_cuts_chunks_of_at_most_chunk_tokens():
    jp = publisher(chunk_tokens=2, next_seq=1)
    for i in range(5):
        jp.token(i, str(i), None, now=0.0)
    assert summary(jp.take(0.0)) == [(1, "tokens", 0, [0], "0"), (2, "tokens", 1, [1, 2], "12"),
                                     (3, "tokens", 3, [3, 4], "34")]


def test_done_flushes_the_buffer_then_ends():
    jp = publisher(chunk_tokens=10)
    jp.token(1, "x", None, now=0.0)
    jp.token(2, "y", None, now=0.0)
    jp.token(None, "!", None, now=0.0)  # text released at the end, no token
    jp.done("cancelled", Usage(prompt_tokens=3, completion_tokens=2), None, now=0.0)
    events = jp.take(0.0)
    assert summary(events) == [(2, "tokens", 0, [1], "x"), (3, "tokens", 1, [2], "y!"),
                               (4, "done", None, None, None)]
    assert events[2].finish_reason == "cancelled" and jp.ended


def test_resume_skips_tokens_already_published_and_continues_seqs():
    first = publisher(chunk_tokens=2)
    published = []
    for i in range(5):
        first.token(i, str(i), None, now=0.0)
        published += first.take(0.0)  # [0] at once, then [1, 2], [3, 4] when due by count
    # the worker dies with tokens 0..2 out (seq 2, 3); the re-run starts after them
    kept = [e for e in published if e.seq <= 3]
    assert summary(kept) == [(2, "tokens", 0, [0], "0"), (3, "tokens", 1, [1, 2], "12")]
    rerun = publisher(next_seq=4, skip_tokens=3, chunk_tokens=2)
    rerun.started("w2", 5.0, 2, now=1.0)
    for i in range(6):
        rerun.token(i, str(i), None, now=1.0)
    rerun.done("length", Usage(prompt_tokens=1, completion_tokens=6), None, now=1.0)
    assert summary(rerun.take(1.0)) == [(4, "started", None, None, None), (5, "tokens", 3, [3, 4], "34"),
                                        (6, "tokens", 5, [5], "5"), (7, "done", None, None, None)]


def test_thread_writes_every_event_once_and_reports_the_end():
    client = fakeredis.FakeRedis()
    pub = Publisher(client, chunk_tokens=4, chunk_ms=5.0, live_ttl_s=60, result_ttl_s=30)
    ended = threading.Event()
    got = []
    jp = pub.open("job1", next_seq=1, skip_tokens=0, on_end=lambda e: (got.append(e), ended.set()))
    pub.call(lambda: jp.started("w", 0.0, 1, 0.0))
    for i in range(10):
        pub.call(lambda i=i: jp.token(i, chr(97 + i), None, 0.0))
    pub.call(lambda: jp.done("length", Usage(prompt_tokens=1, completion_tokens=10), None, 0.0))
    assert ended.wait(5.0)
    pub.close()
    log = read_log(client, "job1")
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert [i for e in log if e.type == "tokens" for i in e.ids] == list(range(10))
    assert "".join(e.text for e in log if e.type == "tokens") == "abcdefghij"
    assert got[0].type == "done" and log[-1] == got[0]
    assert 20 < client.ttl("orcd:job:job1:events") <= 30
