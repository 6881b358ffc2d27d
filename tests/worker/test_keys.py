"""Redis names: one prefix, per-job and per-worker helpers, model names, priority lists."""

from __future__ import annotations

from worker import keys


def test_job_and_worker_names():
    assert keys.job_meta("a1") == "orcd:job:a1:meta"
    assert keys.job_events("a1") == "orcd:job:a1:events"
    assert keys.job_channel("a1") == "orcd:job:a1"
    assert keys.job_cancel("a1") == "orcd:job:a1:cancel"
    assert keys.worker("w@h") == "orcd:worker:w@h"


def test_model_and_queue_names():
    assert keys.model_name("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert keys.model_name("/tmp/x/Tiny Llama.Q8_0.gguf") == "tiny-llama.q8_0"
    assert keys.queue("/tmp/x/Tiny Llama.Q8_0.gguf") == "orcd.tiny-llama.q8_0"


def test_priority_lists_and_mapping():
    assert keys.queue_lists("orcd.m") == ["orcd.m"] + [f"orcd.m:{p}" for p in range(1, 10)]
    assert [keys.celery_priority(p) for p in (0, 5, 9)] == [9, 4, 0]


def test_job_id_rule():
    assert keys.valid_job_id("abc-1_2.3")
    assert not keys.valid_job_id("")
    assert not keys.valid_job_id("a:b")
    assert not keys.valid_job_id("-a")
    assert not keys.valid_job_id("a" * 129)
