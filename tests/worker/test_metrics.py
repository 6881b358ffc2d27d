"""Worker metrics: the scheduler on a fake engine records them, the HTTP server exports them."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.worker.fakes import FakeEngine, FakeGeneration, RecordingSink
from worker.metrics import WorkerMetrics
from worker.scheduler import Request, Scheduler


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_two_jobs_on_a_fake_engine_scraped_over_http():
    metrics = WorkerMetrics()
    server = metrics.serve(0, "127.0.0.1")
    port = server.server_port
    clock = [100.0]
    scheduler = Scheduler(FakeEngine(max_batch=2), clock=lambda: clock[0], metrics=metrics)
    sinks = {name: RecordingSink() for name in ("stops", "runs", "empty")}
    # "stops": first token (1 + 13) % 16 = 14, then 15 = stop; "runs": 1, 2, 3 = length
    for name, prompt, max_tokens in (("stops", [13], 10), ("runs", [0], 3), ("empty", [], 3)):
        scheduler.submit(Request(job_id=name, prompt_ids=prompt, max_tokens=max_tokens, sink=sinks[name],
                                 new_generation=lambda n=max_tokens: FakeGeneration(n)))
    try:
        clock[0] = 100.5
        scheduler.run_once()  # prefill both (first tokens at 100.5), decode: "stops" ends
        mid = scrape(port)
        clock[0] = 101.0
        scheduler.run_once()  # "runs" ends; "empty" is refused
        end = scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    assert sinks["stops"].log[-1] == ("finished", "stop", 2)
    assert sinks["runs"].log[-1] == ("finished", "length", 3)
    assert (mid[("orcd_worker_active_jobs", ())], mid[("orcd_worker_kv_slots_in_use", ())],
            mid[("orcd_worker_queued_jobs", ())]) == (1.0, 1.0, 1.0)
    assert mid[("orcd_worker_tokens_generated_total", ())] == 4.0
    jobs = {key: value for key, value in end.items() if key[0].startswith("orcd_worker_jobs_")}
    assert {key: value for key, value in jobs.items() if key[0].endswith("_total")} == {
        ("orcd_worker_jobs_started_total", ()): 2.0,
        ("orcd_worker_jobs_finished_total", (("reason", "stop"),)): 1.0,
        ("orcd_worker_jobs_finished_total", (("reason", "length"),)): 1.0,
        ("orcd_worker_jobs_finished_total", (("reason", "error"),)): 1.0}
    assert end[("orcd_worker_errors_total", (("type", "InvalidJob"),))] == 1.0
    assert end[("orcd_worker_tokens_generated_total", ())] == 5.0
    assert (end[("orcd_worker_active_jobs", ())], end[("orcd_worker_kv_slots_in_use", ())],
            end[("orcd_worker_queued_jobs", ())]) == (0.0, 0.0, 0.0)
    # TTFT: both first tokens 0.5 s after submission; decode rate: only "runs" has tokens after its
    # first at a later time: (3 - 1) tokens / 0.5 s
    ttft = end[("orcd_worker_ttft_seconds_count", ())], end[("orcd_worker_ttft_seconds_sum", ())]
    assert ttft == (2.0, 1.0)
    assert end[("orcd_worker_ttft_seconds_bucket", (("le", "0.25"),))] == 0.0
    assert end[("orcd_worker_ttft_seconds_bucket", (("le", "0.5"),))] == 2.0
    assert (end[("orcd_worker_decode_tokens_per_second_count", ())],
            end[("orcd_worker_decode_tokens_per_second_sum", ())]) == (1.0, 4.0)
    # engine calls: one prefill (both jobs), two decodes
    assert end[("orcd_worker_engine_step_seconds_count", (("phase", "prefill"),))] == 1.0
    assert end[("orcd_worker_engine_step_seconds_count", (("phase", "decode"),))] == 2.0


def test_service_side_outcomes_count_once():
    metrics = WorkerMetrics()
    metrics.failed("InvalidJob")
    metrics.finished("cancelled")
    value = metrics.registry.get_sample_value
    assert value("orcd_worker_jobs_finished_total", {"reason": "error"}) == 1.0
    assert value("orcd_worker_jobs_finished_total", {"reason": "cancelled"}) == 1.0
    assert value("orcd_worker_errors_total", {"type": "InvalidJob"}) == 1.0
    assert value("orcd_worker_jobs_started_total") == 0.0
