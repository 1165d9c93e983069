"""Huge pages for the 8-bit codes: a hint to Linux, so that a cold scan is not paid in page walks.

numpy already asks for transparent huge pages for its own large arrays (so the float32
vectors a brute-force pass streams sit in 2 MiB pages), but faiss keeps the codes in a
`std::vector` of its own, which Linux backs with 4 KiB pages where transparent huge pages
are in `madvise` mode (the default of most distributions, and of every machine measured
here). A scan of 100k codes (36.6 MiB) then crosses ~9,400 page boundaries, each a TLB miss
and a stop for the hardware prefetcher. `back_with_huge_pages` marks the range
`MADV_HUGEPAGE` and asks the kernel to collapse what is already there (`MADV_COLLAPSE`,
Linux 6.1+). Anything the kernel refuses leaves the pages as they were: it is a hint, never a
change in what the scan returns. Measured (docs/benchmarks.md, "Huge pages for the codes"): a
cold scan 8–20% shorter on the AVX-512 EPYC, 2–3% on the Xeon, whose scan is bound by memory
bandwidth instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Callable, Optional

HUGE_PAGE = 2 * 2**20
"""x86-64's transparent huge page (2 MiB)."""

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
"""`<linux/mman.h>` (asm-generic/mman-common.h): 14 since Linux 2.6.38, 25 since Linux 6.1."""

enabled = True
"""Off only to measure what the hint is worth (`bench/retrieval_latency.py --no-huge-pages`)."""


@functools.cache
def _madvise() -> Optional[Callable[[int, int, int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    madvise = ctypes.CDLL(name, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def back_with_huge_pages(address: int, length: int) -> bool:
    """Ask Linux to back the whole 2 MiB pages inside [address, address + length) with huge
    pages, now and as the range grows. True if the kernel took the collapse."""
    madvise = _madvise()
    start = -(-address // HUGE_PAGE) * HUGE_PAGE  # only pages wholly inside: a hint must not touch neighbours
    end = (address + length) // HUGE_PAGE * HUGE_PAGE
    if not enabled or madvise is None or end <= start:
        return False
    if madvise(start, end - start, MADV_HUGEPAGE) != 0:
        return False
    return madvise(start, end - start, MADV_COLLAPSE) == 0
