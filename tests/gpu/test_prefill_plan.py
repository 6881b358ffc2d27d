"""gpu.prefill_plan: which prompts share a packed prefill pass."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gpu.prefill_plan import PACK_CTX, packable, plan_prefill


def test_plan_examples():
    assert plan_prefill([10, 20, 30], [0, 0, 0], rows=512) == [range(0, 3)]
    assert plan_prefill([200, 200, 200], [0, 0, 0], rows=512) == [range(0, 2), range(2, 3)]
    assert plan_prefill([5, 300, 6, 7], [0, 0, 0, 0], rows=512) == [range(0, 1), range(1, 2), range(2, 4)]
    assert plan_prefill([1000], [0], rows=512) == [range(0, 1)]
    assert plan_prefill([10, 10], [250, 0], rows=512) == [range(0, 1), range(1, 2)]  # 250 + 10 > PACK_CTX
    assert plan_prefill([PACK_CTX], [0], rows=512) == [range(0, 1)]
    assert packable(PACK_CTX, 0, 512) and not packable(PACK_CTX + 1, 0, 512)
    assert not packable(100, 0, 64)  # longer than a pass


@given(st.lists(st.tuples(st.integers(1, 700), st.integers(0, 300)), min_size=1, max_size=40),
       st.integers(1, 512))
def test_plan_covers_the_batch_in_order_within_limits(prompts, rows):
    lengths, starts = [n for n, _ in prompts], [s for _, s in prompts]
    plan = plan_prefill(lengths, starts, rows)
    assert [i for r in plan for i in r] == list(range(len(prompts)))  # every prompt once, in batch order
    for r in plan:
        if any(not packable(lengths[i], starts[i], rows) for i in r):
            assert len(r) == 1  # a prompt that is not packable runs alone
        else:
            assert sum(lengths[i] for i in r) <= rows
    for a, b in zip(plan, plan[1:], strict=False):  # a pass is closed only when the next prompt can't join
        if all(packable(lengths[i], starts[i], rows) for i in [*a, b[0]]):
            assert sum(lengths[i] for i in a) + lengths[b[0]] > rows


@given(st.integers(1, 512), st.integers(1, 512))
def test_pack_bucket_pads_to_a_captured_size(n, rows):
    from gpu.prefill_plan import pack_bucket, pack_buckets

    n = min(n, rows)
    bucket = pack_bucket(n, rows)
    assert n <= bucket <= rows and bucket in pack_buckets(rows)
