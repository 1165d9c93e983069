"""Times a query names ("on 9 November, 2022", "in May 2023", "in 2023"), as date intervals.

A question about a time should favour memories dated then. This module only reads the
text; the pool turns a match into one more non-negative boost term, so the similarity gate
stays the core of the score. Relative phrases ("last week") are left alone: they need a
reference time the pool does not know for a question.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_MONTH = r"(?P<month>" + "|".join(MONTHS) + r")"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"  # 1900–2099: a number outside reads as a count, not a year
# Most specific first; each match is blanked out so "May 2023" inside "7 May 2023" counts once.
_PATTERNS = (
    ("day", re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE)),
    ("day", re.compile(rf"\b{_MONTH}\s+{_DAY},?\s*{_YEAR}\b", re.IGNORECASE)),
    ("month", re.compile(rf"\b{_MONTH},?\s+(?:of\s+)?{_YEAR}\b", re.IGNORECASE)),
    ("year", re.compile(rf"\b(?:in|during|of|by)\s+{_YEAR}\b", re.IGNORECASE)),
)
_ANY_YEAR = re.compile(r"(?:19|20)\d\d")
"""Every pattern above names a year: text without four such digits names no time, and most
questions have none (skips four searches and four substitutions per query)."""
DAY_SLACK = timedelta(days=1)
"""A day named in a question may be the day before or after the note was dated (time zones,
"yesterday" in the note itself)."""


def named_intervals(text: str) -> list[tuple[float, float]]:
    """[start, end) epoch-second intervals for each date the text names, most specific kind."""
    intervals: list[tuple[float, float]] = []
    if not _ANY_YEAR.search(text):
        return intervals
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            parts = match.groupdict()
            year = int(parts["year"])
            try:
                if kind == "day":
                    start = datetime(year, MONTHS.index(parts["month"].lower()) + 1, int(parts["day"]), tzinfo=timezone.utc)
                    start, end = start - DAY_SLACK, start + timedelta(days=1) + DAY_SLACK
                elif kind == "month":
                    month = MONTHS.index(parts["month"].lower()) + 1
                    start = datetime(year, month, 1, tzinfo=timezone.utc)
                    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
                else:
                    start, end = datetime(year, 1, 1, tzinfo=timezone.utc), datetime(year + 1, 1, 1, tzinfo=timezone.utc)
            except ValueError:  # "31 February": not a date, so no interval
                continue
            intervals.append((start.timestamp(), end.timestamp()))
        text = pattern.sub(" ", text)
    return intervals


def inside(created: np.ndarray, intervals: list[tuple[float, float]]) -> np.ndarray:
    """1.0 where a memory's date falls in any interval, else 0.0 (vectorised over memories)."""
    hit = np.zeros(len(created), dtype=bool)
    for start, end in intervals:
        hit |= (created >= start) & (created < end)
    return hit.astype(np.float64)
