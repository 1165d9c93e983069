"""The huge-page hint for faiss's codes: a hint that changes no byte, and where Linux takes it,
the codes really sit in huge pages."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from smem.memory import pages
from smem.memory import index as vector_index
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


def coded(vectors: np.ndarray) -> tuple[VectorIndex, np.ndarray, int]:
    """An index built over `vectors`, a copy of its codes and their address (alive while the index is)."""
    import faiss

    index = VectorIndex(vectors.shape[1], quantized_threshold=20_000)
    index.add(vectors)
    index.build()
    codes = faiss.downcast_InvertedLists(index._codes.invlists)
    size = codes.list_size(0) * codes.code_size
    return index, faiss.rev_swig_ptr(codes.get_codes(0), size).copy(), int(codes.get_codes(0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_the_index_puts_its_codes_in_huge_pages_where_linux_takes_the_hint_and_changes_no_byte(monkeypatch):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30_000, 384)).astype(np.float32)  # 11 MB of codes: five whole huge pages
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(pages, "enabled", False)
    _, plain, _ = coded(vectors)
    monkeypatch.setattr(pages, "enabled", True)
    taken: list[bool] = []
    hint = vector_index.back_with_huge_pages
    monkeypatch.setattr(vector_index, "back_with_huge_pages", lambda *args: taken.append(hint(*args)) or taken[-1])
    index, hinted, address = coded(vectors)  # `index` holds the codes at `address` until the test ends
    assert taken, "the index gives the hint after coding"
    assert np.array_equal(hinted, plain), "a hint changes no byte"
    if taken[-1]:  # the kernel may refuse (THP off, Linux before 6.1): then nothing is claimed
        assert huge_kib_around(address + len(hinted) // 2) >= pages.HUGE_PAGE // 1024
