"""The huge-page hint for faiss's codes: a hint that changes no byte, and where Linux takes it,
the codes really sit in huge pages."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from smem.memory import pages
from smem.memory.index import VectorIndex


def huge_kib_around(address: int) -> int:
    """AnonHugePages (kB) of the mapping that holds `address`, from /proc/self/smaps."""
    mapping = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        span = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if span:
            mapping = int(span[1], 16) <= address < int(span[2], 16)
        elif mapping and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


def test_a_range_holding_no_whole_huge_page_is_left_alone():
    buffer = np.ones(pages.HUGE_PAGE // 2, dtype=np.uint8)
    assert pages.back_with_huge_pages(buffer.ctypes.data, buffer.nbytes) is False


def test_the_hint_can_be_switched_off(monkeypatch):
    buffer = np.ones(4 * pages.HUGE_PAGE, dtype=np.uint8)
    monkeypatch.setattr(pages, "enabled", False)
    assert pages.back_with_huge_pages(buffer.ctypes.data, buffer.nbytes) is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_the_codes_keep_their_bytes_and_sit_in_huge_pages_where_linux_takes_the_hint():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30_000, 384)).astype(np.float32)  # 11 MB of codes: five whole huge pages
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(384, quantized_threshold=20_000)
    index.add(vectors)
    index.build()
    import faiss

    codes = faiss.downcast_InvertedLists(index._codes.invlists)
    size = codes.list_size(0) * codes.code_size
    address = int(codes.get_codes(0))
    before = faiss.rev_swig_ptr(codes.get_codes(0), size).copy()
    taken = pages.back_with_huge_pages(address, size)
    assert np.array_equal(faiss.rev_swig_ptr(codes.get_codes(0), size), before), "a hint changes no byte"
    if taken:  # the kernel may refuse (THP off, Linux before 6.1): then nothing is claimed
        assert huge_kib_around(address + size // 2) >= pages.HUGE_PAGE // 1024
