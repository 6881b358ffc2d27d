"""How the queue benches submit a burst (bench/ is on the path when they run as scripts):
`one` — a loop of `Client.submit` in one thread (one message per job);
`threads` — one thread per job, all calling `Client.submit` at once, as a web app's concurrent requests do
(the client's group commit writes the calls that meet one in flight together; still one message per job);
`many` — one `Client.submit_many` call (a message per group of jobs)."""

from __future__ import annotations

import threading

MODES = ("one", "threads", "many")


def submit_all(client, jobs: list, how: str) -> list:
    """The handles of `jobs` submitted `how`, in order."""
    if how == "many":
        return client.submit_many(jobs)
    if how == "one":
        return [client.submit(job) for job in jobs]
    handles: list = [None] * len(jobs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def submit(k: int) -> None:
        start.wait()
        try:
            handles[k] = client.submit(jobs[k])
        except BaseException as exc:  # raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return handles
