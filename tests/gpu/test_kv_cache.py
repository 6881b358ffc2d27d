"""Slot bookkeeping and the numpy KV storage."""

from __future__ import annotations

import numpy as np
import pytest

from gpu.errors import ContextOverflow, EngineError, KVCacheFull, UnknownSlot
from gpu.kv_cache import KVCache, SlotTable


def test_alloc_hands_out_lowest_free_slot_then_reports_full():
    table = SlotTable(n_slots=3, max_context=16)
    assert [table.alloc(), table.alloc(), table.alloc()] == [0, 1, 2]
    with pytest.raises(KVCacheFull, match="all 3 KV slots"):
        table.alloc()
    table.free(1)
    assert table.in_use() == 2
    assert table.alloc() == 1


def test_freed_slot_comes_back_empty():
    table = SlotTable(2, 16)
    slot = table.alloc()
    table.commit(slot, 5)
    assert table.seq_len(slot) == 5
    table.free(slot)
    assert table.alloc() == slot
    assert table.seq_len(slot) == 0


def test_unknown_slot_errors_name_the_slot():
    table = SlotTable(2, 16)
    table.alloc()
    for call in (table.free, table.seq_len, table.check):
        with pytest.raises(UnknownSlot, match=r"slot 1 is not allocated \(allocated: \[0\]\)"):
            call(1)
    assert issubclass(UnknownSlot, EngineError)


def test_reserve_and_commit_respect_max_context():
    table = SlotTable(1, 10)
    slot = table.alloc()
    assert table.reserve(slot, 10) == 0  # exactly full is allowed
    table.commit(slot, 7)
    assert table.reserve(slot, 3) == 7
    with pytest.raises(ContextOverflow, match="slot 0: 7 cached \\+ 4 new tokens exceed max_context 10"):
        table.reserve(slot, 4)
    assert table.seq_len(slot) == 7  # a refused reservation changes nothing


def test_kv_cache_write_then_view_is_head_major():
    n_layers, n_slots, n_kv_heads, max_context, head_dim = 2, 3, 2, 8, 4
    cache = KVCache(n_layers, n_slots, n_kv_heads, max_context, head_dim)
    assert cache.nbytes == 2 * 4 * n_layers * n_slots * n_kv_heads * max_context * head_dim
    rng = np.random.default_rng(0)
    k1, v1 = rng.standard_normal((2, 3, n_kv_heads, head_dim), dtype=np.float32)  # [T=3, n_kv, hd]
    k2, v2 = rng.standard_normal((2, 1, n_kv_heads, head_dim), dtype=np.float32)
    cache.write(1, 2, 0, k1, v1)
    cache.write(1, 2, 3, k2, v2)
    keys, values = cache.view(1, 2, 4)
    assert keys.shape == (n_kv_heads, 4, head_dim)
    np.testing.assert_array_equal(keys[:, :3], k1.transpose(1, 0, 2))
    np.testing.assert_array_equal(values[:, 3], v2[0])
    assert not cache.k[0].any() and not cache.k[1, :2].any()  # other layers and slots untouched
