"""Jobs and events: validation, versioning, JSON round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gpu.params import SamplingParams
from worker.schemas import EVENTS, Done, Error, Job, Queued, Started, TokenLogprob, Tokens, Usage, parse_event


def test_job_needs_exactly_one_prompt_form():
    assert Job(prompt="hi").messages is None
    assert Job(messages=[{"role": "user", "content": "hi"}]).prompt is None
    for bad in ({}, {"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, {"prompt": ""},
                {"messages": [{"role": "user", "content": "x"}], "chat": True}):
        with pytest.raises(ValidationError):
            Job(**bad)


def test_job_fields_are_checked():
    with pytest.raises(ValidationError, match="job id must be"):
        Job(prompt="x", id="a:b")
    with pytest.raises(ValidationError, match="priority"):
        Job(prompt="x", priority=10)
    with pytest.raises(ValidationError, match="temperature"):
        Job(prompt="x", params={"temperature": "hot"})
    with pytest.raises(ValidationError, match="extra"):
        Job(prompt="x", colour="blue")
    with pytest.raises(ValidationError, match="v"):
        Job(prompt="x", v=2)


def test_job_round_trip_keeps_sampling_params():
    job = Job(prompt="x", params=SamplingParams(max_tokens=7, seed=3, stop=["\n"]), priority=9,
              correlation_id="c1")
    again = Job.model_validate_json(job.model_dump_json())
    assert again == job and again.params.max_tokens == 7


texts = st.text(max_size=20)


@given(st.lists(st.integers(0, 2**31 - 1), max_size=8), texts, st.integers(1, 10**6), st.integers(0, 10**6))
def test_tokens_event_round_trip(ids, text, seq, index):
    event = Tokens(job_id="j", seq=seq, index=index, ids=ids, text=text,
                   logprobs=[TokenLogprob(token_id=i, logprob=-1.5, top=[(i, -1.5)]) for i in ids] or None)
    assert parse_event(event.model_dump_json()) == event


def test_each_event_type_parses_back():
    usage = Usage(prompt_tokens=3, completion_tokens=2)
    for event in (Queued(job_id="j", seq=1, model="m", queue="q", priority=5),
                  Started(job_id="j", seq=2, worker="w", queue_ms=1.5, attempt=2),
                  Done(job_id="j", seq=3, finish_reason="cancelled", usage=usage),
                  Error(job_id="j", seq=3, error_type="ContextTooLong", message="too long")):
        assert EVENTS.validate_json(event.model_dump_json()) == event
    with pytest.raises(ValidationError):
        parse_event('{"v": 1, "type": "tokens", "job_id": "j", "seq": 0, "index": 0, "ids": [], "text": ""}')


def test_events_are_written_as_v2_with_the_correlation_id_and_v1_still_reads():
    event = Done(job_id="j", seq=4, finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=2),
                 correlation_id="req-7")
    assert (event.v, parse_event(event.model_dump_json()).correlation_id) == (2, "req-7")
    old = parse_event('{"v": 1, "type": "queued", "job_id": "j", "seq": 1, "ts": 5.0, "model": "m", '
                      '"queue": "q", "priority": 5}')
    assert (old.v, old.correlation_id, old.queue) == (1, None, "q")
    with pytest.raises(ValidationError, match="v"):
        parse_event('{"v": 3, "type": "queued", "job_id": "j", "seq": 1, "model": "m", "queue": "q", '
                    '"priority": 5}')
    with pytest.raises(ValidationError, match="correlation_id"):
        Queued(job_id="j", seq=1, model="m", queue="q", priority=5, correlation_id="x" * 129)
