"""A recorded answer, replayed: the app's cached example shows a whole run (chat, swaps,
memories, context chart, timeline) at once, before a visitor on a cold Space has generated
anything. `scripts/record_example.py` writes the recording; events are stored in their SSE
form (docs/api.md), memories by id plus their scores, and read back against the same set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from smem.generation.events import ContextStats, Done, DoneStats, Event, Memories, MemoryUpdate, Thinking, Token
from smem.memory.pool import MemoryPool
from smem.memory.records import Hit
from smem.ui.answer_view import AnswerView


def save(path: Path, meta: dict[str, Any], events: Iterable[Event]) -> None:
    """Write `meta` (model, memory set, message, settings) and the events of one answer."""
    record = {**meta, "events": [event.to_sse() for event in events]}
    path.write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def events(record: dict[str, Any], pool: MemoryPool) -> Iterator[Event]:
    """The recorded events again, with each memory looked up in `pool` (the recorded set)."""

    def hits(items: list[dict[str, Any]]) -> list[Hit]:
        return [
            Hit(memory=pool.get(item["id"]), score=item["score"], similarity=item["similarity"],
                multiplier=item["multiplier"], rank=rank)
            for rank, item in enumerate(items)
        ]  # fmt: skip

    for item in record["events"]:
        kind = item["type"]
        if kind == "memories":
            yield Memories(hits(item["memories"]))
        elif kind == "thinking":
            yield Thinking(item["t"])
        elif kind == "token":
            yield Token(item["t"])
        elif kind == "memory_update":
            yield MemoryUpdate(
                hits(item["memories"]), hits(item["added"]), hits(item["removed"]), item["at_token"],
                exact=item.get("exact", True),
            )  # fmt: skip
        elif kind == "context":
            yield ContextStats(**{key: value for key, value in item.items() if key != "type"})
        elif kind == "done":
            yield Done(DoneStats(**{key: value for key, value in item.items() if key != "type"}))
        else:
            raise ValueError(f"unknown recorded event {kind!r}")


def replay(record: dict[str, Any], pool: MemoryPool) -> AnswerView:
    """The recorded answer as the app's view state, as it stood when the answer ended."""
    view = AnswerView()
    for event in events(record, pool):
        view.apply(event, now=0.0)
    return view
