"""View logic without Gradio: the event reducer (smem.ui.answer_view), the figures and table rows
(smem.ui.viz) and the visitor's actions (smem.ui.actions)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from datetime import datetime, timezone

import plotly.graph_objects as go
import pytest

from smem.serving.api_schema import ApiSettings
from smem.ui import actions, answer_view, viz
from smem.generation.events import ContextStats, Done, DoneStats, Memories, MemoryUpdate, Thinking, Token
from smem.memory.records import Hit, Memory, MemoryFileError, Pull
from smem.memory.memory_sets import MemorySets
from smem.memory.pool import MemoryPool
from smem.memory.wording import counted
from smem.ui.answer_view import AnswerView, Changed, Throttle

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def hit(memory_id: str, content: str = "", memory_type: str | None = "insight", score: float = 0.5) -> Hit:
    memory = Memory(
        id=memory_id,
        content=content or f"memory {memory_id}",
        type=memory_type,
        subject=None,
        emotional_intensity=0.5,
        created_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
        tokens=5,
    )
    return Hit(memory=memory, score=score, similarity=score, multiplier=1.0, rank=0)


def pool_hits(pool: MemoryPool, ids: str) -> list[Hit]:
    """Equal hits on the pool's memories named by each character of `ids`: the chat view tests
    follow swaps and text, not scores."""
    return [Hit(memory=pool.get(i), score=0.5, similarity=0.5, multiplier=1.0, rank=0) for i in ids]


def stats(generated: int, memory: int = 20, rag: int = 20) -> ContextStats:
    return ContextStats(
        prompt_tokens=100,
        memory_tokens=memory,
        generated_tokens=generated,
        swaps=0,
        rag_memory_tokens=rag,
        all_memory_tokens=500,
    )


def done(tokens: int, learned=None) -> Done:
    return Done(
        stats=DoneStats(
            tokens=tokens,
            thinking_tokens=0,
            swaps=1,
            retrievals=3,
            stop_reason="eos",
            ttft_s=0.1,
            total_s=1.25,
            tokens_per_s=20.0,
            retrieval_ms=1.0,
            swap_ms=1.0,
        ),
        learned=learned,
    )


A, B, C, D = hit("a"), hit("b"), hit("c"), hit("d")


def streamed_view() -> AnswerView:
    """Memories a, b; at token 4 b is swapped for c; at token 8 a for d; 10 tokens in all."""
    view = AnswerView()
    events = [
        Memories([A, B]),
        stats(0),
        Thinking("Let me think."),
        Token("One "),
        Token("two "),
        MemoryUpdate(memories=[A, C], added=[C], removed=[B], at_token=4),
        stats(4),
        Token("three "),
        Token("four "),
        MemoryUpdate(memories=[C, D], added=[D], removed=[A], at_token=8, exact=False),
        stats(8),
        Token("five."),
        stats(10),
        done(10),
    ]
    for event in events:
        view.apply(event)
    return view


# -- the reducer ---------------------------------------------------------------------------------


def test_each_event_reports_what_it_changed():
    view = AnswerView()
    assert view.apply(Memories([A])) == Changed.MEMORIES
    assert view.apply(Token("x")) == Changed.CHAT
    assert view.apply(Thinking("y")) == Changed.CHAT
    assert view.apply(stats(1)) == Changed.CONTEXT
    assert view.apply(MemoryUpdate([B], [B], [A], 1)) == Changed.MEMORIES | Changed.CHAT, "the swap shows in the chat"
    assert view.apply(done(1)) == Changed.DONE | Changed.CHAT
    with pytest.raises(TypeError):
        view.apply("not an event")


def test_table_marks_added_kept_and_just_removed_with_entry_token():
    view = AnswerView()
    view.apply(Memories([A, B]))
    assert [(r.hit.id, r.status, r.entered_at) for r in view.rows()] == [("a", "added", 0), ("b", "added", 0)]
    view.apply(MemoryUpdate(memories=[A, C], added=[C], removed=[B], at_token=6))
    assert [(r.hit.id, r.status, r.entered_at) for r in view.rows()] == [
        ("a", "kept", 0),
        ("c", "added", 6),
        ("b", "removed", 0),
    ]
    assert viz.memory_rows(view.rows())[1] == ["🟢 added", "memory c", "insight", 0.5, 6, ""]
    assert [row[0] for row in viz.memory_rows(view.rows())] == ["⚪ kept", "🟢 added", "🔴 removed"]


def test_a_clicked_row_says_which_links_pulled_its_memory_in():
    """Issue 11: a visitor sees which links pulled a memory in: in the table, and in full when
    they click its row."""
    sketch = hit("a", "Having Alex sketch a word problem cut his freeze time in half.", score=0.6)
    soccer = dataclasses.replace(
        hit("b", "Alex lights up when word problems involve <b>soccer</b>.", score=0.225),
        similarity=0.5,
        multiplier=1.5,
        pulled_by=(Pull("a", "learned", 0.8), Pull("z", "encoding", 1.0)),
    )
    view = AnswerView()
    view.apply(Memories([sketch, soccer]))
    rows = viz.memory_rows(view.rows())
    assert rows[0][-1] == "", "picked for its similarity alone"
    assert rows[1][-1] == "🔗 “Having Alex sketch a word problem…” (used together)\n🔗 “z” (written together)"

    detail = viz.memory_detail(view.rows(), soccer.content)
    assert "Score **0.225** = similarity 0.500² × Hebbian multiplier **1.50**" in detail
    assert "habituation 0.60" in detail, "0.225 = 0.5² × 0.6 × 1.5: the damping is named, not hidden"
    assert "learned link (used together), weight 0.80, from “Having Alex sketch a word problem cut his freeze" in detail
    assert "encoding link (written together), weight 1.00, from “z”" in detail
    assert "&lt;b&gt;soccer&lt;/b&gt;" in detail and "<b>soccer" not in detail, "memory text is shown, not rendered"
    assert "No link pulled it in" in viz.memory_detail(view.rows(), sketch.content)
    assert "Click a memory" in viz.memory_detail([], None)
    assert "No details for that row" in viz.memory_detail(view.rows(), "a memory of another answer")


def test_timeline_answers_which_memories_were_in_context_at_any_token():
    view = streamed_view()
    assert [h.id for h in view.segment_at(0).hits] == ["a", "b"]
    assert [h.id for h in view.segment_at(3).hits] == ["a", "b"]
    assert [h.id for h in view.segment_at(4).hits] == ["a", "c"]
    assert [h.id for h in view.segment_at(9).hits] == ["c", "d"]
    assert [(r.hit.id, r.status, r.entered_at) for r in view.rows_at(5)] == [("a", "kept", 0), ("c", "added", 4)]
    assert [(r.hit.id, r.status, r.entered_at) for r in view.rows_at(9)] == [("c", "kept", 4), ("d", "added", 8)]
    assert view.swap_tokens() == [4, 8]
    assert [(i.hit.id, i.start, i.end) for i in view.intervals()] == [
        ("a", 0, 8),
        ("b", 0, 4),
        ("c", 4, 10),
        ("d", 8, 10),
    ]


def test_links_forming_are_the_shares_of_the_answer_memories_spent_together():
    shares = streamed_view().together()
    assert shares == pytest.approx({("a", "b"): 0.4, ("a", "c"): 0.4, ("c", "d"): 0.2})


def test_excerpt_follows_the_text_written_by_a_token():
    view = streamed_view()
    full = "Let me think.One two three four five."
    assert view.excerpt_at(10) == full
    assert view.excerpt_at(4) == "Let me think.One two "
    assert view.excerpt_at(8).endswith("four ")
    assert view.excerpt_at(10, width=5) == "…five."
    assert len(view.excerpt_at(2)) <= len(view.excerpt_at(4))


def test_chat_puts_thinking_in_a_collapsible_message_above_the_answer():
    view = AnswerView()
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "earlier thoughts"}],
            "metadata": {"title": "💭 Thinking"},
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}], "metadata": None},
        {"role": "user", "content": "Next?"},
    ]
    view.apply(Thinking("Hmm"))
    messages = answer_view.chat_messages(history, view)
    assert messages[-2:] == [
        {"role": "user", "content": "Next?"},
        {
            "role": "assistant",
            "content": {"type": "text", "text": "Hmm"},
            "metadata": {"title": answer_view.THINKING_TITLE, "status": "pending"},
        },
    ]
    view.apply(Token("Answer"))
    messages = answer_view.chat_messages(history, view)
    assert messages[-2]["metadata"]["status"] == "done" and messages[-1] == {
        "role": "assistant",
        "content": {"type": "text", "text": "Answer"},
    }
    assert answer_view.model_history(history[:-1]) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ], "Gradio 6 content blocks are flattened and thinking is left out"


def test_a_swap_shows_at_the_end_of_its_sentence_never_inside_a_word(pool):
    """A swap lands between two tokens, often inside a word: its block waits for the sentence
    to end, and the next sentence follows it. Until then the frame is the text alone, so each
    frame only grows at its end (the front end applies streamed frames as diffs)."""
    view = AnswerView()
    x, y = pool_hits(pool, "xy")
    view.apply(Memories([x]))
    view.apply(Token("Plan for Thursda"))
    view.apply(MemoryUpdate(memories=[y], added=[y], removed=[x], at_token=4))
    live = answer_view.chat_messages([], view)
    assert live == [{"role": "assistant", "content": {"type": "text", "text": "Plan for Thursda"}}]
    view.apply(Token("y's session. Bring the worksheet."))
    messages = answer_view.chat_messages([], view)
    assert messages[0] == {"role": "assistant", "content": {"type": "text", "text": "Plan for Thursday's session. "}}
    assert messages[1]["metadata"]["title"] == "🔄 Memories swapped at token 4"
    assert messages[2:] == [{"role": "assistant", "content": {"type": "text", "text": "Bring the worksheet."}}]


def test_a_swap_in_an_unfinished_last_sentence_shows_once_the_answer_ends(pool):
    view = AnswerView()
    x, y = pool_hits(pool, "xy")
    view.apply(Memories([x]))
    view.apply(Token("Done. And then"))
    view.apply(MemoryUpdate(memories=[y], added=[y], removed=[x], at_token=5))
    assert not any(m.get("metadata") for m in answer_view.chat_messages([], view))
    view.stop()
    messages = answer_view.chat_messages([], view)
    assert [answer_view.message_text(m["content"]) for m in messages if not m.get("metadata")] == ["Done. And then"]
    assert messages[-1]["metadata"]["title"] == "🔄 Memories swapped at token 5"


def test_list_numbers_do_not_end_a_sentence_and_line_breaks_do(pool):
    """A block goes after a line break too, and the next piece begins at the next word: a
    piece that began with a nested list line's indent was drawn as a code block."""
    view = AnswerView()
    x, y, z = pool_hits(pool, "xyz")
    view.apply(Memories([x]))
    view.apply(Token("7. Encourage"))
    view.apply(MemoryUpdate(memories=[y], added=[y], removed=[x], at_token=3))
    view.apply(Token(" her to rest\n8. Ask"))
    view.apply(MemoryUpdate(memories=[z], added=[z], removed=[y], at_token=9))
    view.apply(Token(" for help.\n    - with homework"))
    messages = answer_view.chat_messages([], view)
    texts = [answer_view.message_text(m["content"]) for m in messages if not m.get("metadata")]
    assert texts == ["7. Encourage her to rest\n", "8. Ask for help.\n    ", "- with homework"], texts


def test_whitespace_between_two_swaps_is_kept_with_the_next_words(pool):
    """Two swaps with only a space between them: the space must not be dropped, or the chat
    (and the history the model reads next turn) glues the words on either side, and a later
    frame no longer starts with what an earlier one showed. Both are in one sentence, so one
    block shows them."""
    view = AnswerView()
    x, y, z = pool_hits(pool, "xyz")
    view.apply(Memories([x]))
    view.apply(Token("Alex plays"))
    view.apply(MemoryUpdate(memories=[y], added=[y], removed=[x], at_token=2))
    view.apply(Token(" "))
    earlier = answer_view.chat_messages([{"role": "user", "content": "Q"}], view)
    view.apply(MemoryUpdate(memories=[z], added=[z], removed=[y], at_token=3))
    view.apply(Token("soccer. Then"))
    messages = answer_view.chat_messages([{"role": "user", "content": "Q"}], view)
    texts = [answer_view.message_text(m["content"]) for m in messages[1:] if not m.get("metadata")]
    assert texts == ["Alex plays soccer. ", "Then"], texts
    blocks = [m for m in messages if m.get("metadata")]
    assert [m["metadata"]["title"] for m in blocks] == ["🔄 Memories swapped at tokens 2, 3"], "both swaps, one block"
    assert answer_view.model_history(messages)[-1]["content"] == "Alex plays soccer. Then"
    assert "".join(texts).startswith(answer_view.model_history(earlier)[-1]["content"])


def test_swaps_show_inline_where_they_happened_and_history_reads_one_answer(pool):
    view = AnswerView()
    x, y, z = pool_hits(pool, "xyz")
    view.apply(Memories([x, y]))
    view.apply(Token("Before the swap. "))
    view.apply(MemoryUpdate(memories=[y, z], added=[z], removed=[x], at_token=37))
    view.apply(Token("After it."))
    messages = answer_view.chat_messages([{"role": "user", "content": "Q"}], view)
    assert [answer_view.message_text(m["content"]) for m in messages[1:] if not m.get("metadata")] == [
        "Before the swap. ",
        "After it.",
    ]
    swap = messages[2]
    assert swap["metadata"]["title"] == "🔄 Memories swapped at token 37"
    swapped_in, swapped_out = swap["content"].split("**out:**")
    assert "Fractions with pizza" in swapped_in and "onerror" in swapped_out
    assert answer_view.model_history(messages) == [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "Before the swap. After it."},
    ], "swap blocks are not read by the model, and the answer's pieces are one message again"


def test_status_line_follows_the_phases_and_counts():
    view = AnswerView()
    assert view.phase == "retrieving" and "0 tokens" in view.status_line(now=0.0)
    view.apply(Memories([]), now=0.0)
    view.apply(Thinking("hm"), now=0.5)
    assert view.phase == "thinking"
    view.apply(Token("Hi"), now=1.0)
    view.apply(Token(" there"), now=1.5)
    line = view.status_line(now=2.0)
    assert view.phase == "answering" and "3 tokens" in line and "0 swaps" in line and "1.5 tokens/s" in line
    assert view.live_excerpt(width=5) == "…there", "the per-token view follows the live answer"
    view.stop()
    assert view.phase == "stopped" and "stopped" in view.status_line(now=2.0)
    finished = AnswerView()
    finished.apply(done(10))
    assert finished.phase == "done" and "10 tokens in 1.2 s · 1 memory swap (3 retrievals)" in finished.status_line()
    assert "the model finished" in finished.status_line()


def test_a_stopped_answer_shows_echoed_headings_as_text():
    view = AnswerView()
    view.apply(Token("## Memories\nAlex likes # signs"))
    assert answer_view.message_text(answer_view.chat_messages([], view)[-1]["content"]).startswith("## Memories")
    view.stop()
    assert answer_view.message_text(answer_view.chat_messages([], view)[-1]["content"]) == "\\## Memories\nAlex likes # signs"


def test_throttle_coalesces_chat_and_panels_and_flushes_at_the_end():
    throttle = Throttle(chat_interval_s=0.05, panel_interval_s=0.25)
    assert throttle.push(Changed.MEMORIES, now=0.0) == Changed.MEMORIES | Changed.CHAT
    assert throttle.push(Changed.CHAT, now=0.01) == Changed.NOTHING
    assert throttle.push(Changed.MEMORIES, now=0.02) == Changed.NOTHING
    assert throttle.push(Changed.CHAT, now=0.06) == Changed.CHAT
    assert throttle.push(Changed.CONTEXT, now=0.3) == Changed.MEMORIES | Changed.CONTEXT | Changed.CHAT
    assert throttle.push(Changed.MEMORIES, now=0.31) == Changed.NOTHING
    assert throttle.push(Changed.DONE | Changed.CHAT, now=0.32) == Changed.DONE | Changed.MEMORIES | Changed.CHAT


# -- figures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool(minilm) -> MemoryPool:
    pool = MemoryPool(minilm, seed=0)
    pool.add_many(
        [
            {"id": "x", "content": XSS, "type": "behavior"},
            {"id": "y", "content": "Alex likes soccer", "type": "relationship"},
            {"id": "z", "content": "Fractions with pizza slices worked", "type": "what_works"},
            {"id": "w", "content": "No type here"},
        ]
    )
    pool.reinforce(["x", "y"], link_strength=1.0)
    pool.reinforce(["y", "z"], link_strength=0.2)
    pool.reinforce(["y"])
    return pool


def traces(figure) -> dict[str, dict]:
    return {trace.name: trace.to_plotly_json() for trace in figure.data if trace.name}


def test_network_nodes_sized_by_count_coloured_by_type_and_ringed_in_context(pool):
    figure = viz.network_figure(pool, in_context=["y", "z"], forming={("y", "z"): 0.5})
    by_name = traces(figure)
    assert {"behavior", "relationship", "what works", "in context now", "forming now"} <= set(by_name)
    assert by_name["relationship"]["marker"]["color"] == viz.TYPE_COLOURS["relationship"]
    untyped = traces(viz.network_figure(pool, in_context=["w"]))["untyped"]
    assert untyped["marker"]["color"] == viz.UNTYPED_COLOUR, "an untyped memory in context is drawn large, in grey"
    assert by_name["relationship"]["marker"]["size"][0] > by_name["what works"]["marker"]["size"][0]
    assert len(by_name["in context now"]["x"]) == 2
    widths = sorted(t.line.width for t in figure.data if t.mode == "lines" and t.name != "forming now")
    assert len(widths) == 2 and widths[0] < widths[1], "a stronger link is drawn wider"
    assert all(t.hoverinfo == "skip" for t in figure.data if t.mode == "lines"), "links have no hover"
    assert by_name["unlinked (1)"]["marker"]["opacity"] < 0.5, "the unlinked memory is a faint dot"


def test_network_styles_encoding_links_apart_from_learned_ones(minilm):
    day = datetime(2025, 6, 2, 8, 0, tzinfo=timezone.utc)
    dated = MemoryPool(minilm, seed=0)
    dated.add_many([{"id": name, "content": f"note {name}", "created_at": day} for name in "abcd"])
    dated.reinforce(["a", "c"])
    figure = viz.network_figure(dated, in_context=["a", "b"])
    by_name = traces(figure)
    encoding, learned = by_name[viz.ENCODING_NAME], by_name[viz.LEARNED_NAME]
    assert encoding.get("showlegend", True) and learned.get("showlegend", True), "each kind has a legend entry"
    assert encoding["line"]["dash"] == "dash" and "dash" not in learned["line"]
    assert encoding["line"]["color"] != learned["line"]["color"]
    # Drawn: a, b (in context) and c (learned link). Encoding links among them only: a-b, b-c, a-c.
    ends = {frozenset(pair) for pair in zip(encoding["x"][0::3], encoding["x"][1::3])}
    assert len(ends) == 3
    assert len(learned["x"]) == 3, "one learned segment, a-c"
    assert "unlinked (1)" in by_name, "d's encoding links alone do not draw it"


def test_a_clicked_memory_shows_in_the_network_the_links_that_pulled_it_in(minilm):
    day = datetime(2025, 6, 2, 8, 0, tzinfo=timezone.utc)
    dated = MemoryPool(minilm, seed=0)
    dated.add_many([{"id": name, "content": f"note {name}", "created_at": day} for name in "abcd"])
    clicked = Hit(dated.get("d"), 0.3, 0.5, 1.2, 1, pulled_by=(Pull("a", "encoding", 1.0), Pull("gone", "learned", 0.5)))
    assert viz.PULLED_NAME not in traces(viz.network_figure(dated, in_context=["b"]))
    by_name = traces(viz.network_figure(dated, in_context=["b"], pulled=clicked))
    pulled = by_name[viz.PULLED_NAME]
    assert pulled["line"]["color"] == viz.PULLED_COLOUR and len(pulled["x"]) == 3, "one segment: d to a"
    assert "unlinked (1)" in by_name, "a and d are drawn to show the link (c is not)"
    drawn = {(x, y) for name, t in by_name.items() if t.get("mode") == "markers+text" for x, y in zip(t["x"], t["y"])}
    assert {(pulled["x"][0], pulled["y"][0]), (pulled["x"][1], pulled["y"][1])} <= drawn, "it ends on both memories"


def test_a_click_redraws_the_network_only_for_a_memory_a_link_pulled_in(minilm):
    """What the app shows for a clicked row: the detail always; a network with the pulling links
    in red only when links pulled that memory in, drawn on a copy of the visitor's layout."""
    day = datetime(2025, 6, 2, 8, 0, tzinfo=timezone.utc)
    dated = MemoryPool(minilm, seed=0)
    dated.add_many([{"id": name, "content": f"note {name}", "created_at": day} for name in "abcd"])
    pulled = Hit(dated.get("d"), 0.3, 0.5, 1.2, 1, pulled_by=(Pull("a", "encoding", 1.0),))
    alone = Hit(dated.get("a"), 0.6, 0.8, 1.0, 0)
    view = AnswerView()
    view.apply(Memories([alone, pulled]))
    layout = viz.NetworkLayout()
    text, figure = viz.explain_click(view, "note d", dated, layout)
    assert text == viz.memory_detail(view.rows(), "note d") and "Pulled in by 1 link" in text
    assert figure is not None and viz.PULLED_NAME in traces(figure)
    assert layout == viz.NetworkLayout(), "the visitor's layout is not moved by a click"
    assert viz.explain_click(view, "note a", dated, layout) == (viz.memory_detail(view.rows(), "note a"), None)
    assert viz.explain_click(None, None, dated, layout) == (viz.memory_detail([], None), None)


def test_network_labels_the_linked_and_in_context_memories_with_their_text(pool):
    figure = viz.network_figure(pool, viz.NetworkLayout(), in_context=["z"])
    labels = [text for trace in figure.data if trace.mode == "markers+text" for text in trace.text if text]
    assert "Alex likes soccer" in labels and any(label.startswith("Fractions with pizza") for label in labels)


def test_memory_text_is_escaped_everywhere_in_figures(pool):
    network = viz.network_figure(pool, in_context=["x"])
    hovers = [text for trace in network.data if trace.hovertext for text in trace.hovertext]
    assert any('&lt;img src=x onerror="alert(1)"&gt;&lt;script&gt;' in text for text in hovers)
    assert not any("<img" in text or "<script" in text for text in hovers)
    view = AnswerView()
    view.apply(Memories([Hit(memory=pool.get("x"), score=0.9, similarity=0.9, multiplier=1.0, rank=0)]))
    view.apply(done(3))
    timeline = json.loads(viz.timeline_figure(view, at_token=1).to_json())
    labels = [label for trace in timeline["data"] for label in trace["y"]]
    assert labels and all("<img" not in label and "&lt;img" in label for label in labels)
    assert all("<script" not in text for trace in timeline["data"] for text in trace["hovertext"])
    assert viz.memory_rows(view.rows())[0][1] == XSS, "table cells stay plain text; the table shows them as text"


def test_layout_keeps_known_memories_in_place_and_spreads_newcomers():
    layout = viz.NetworkLayout()
    first = layout.place(["a", "b", "c"], [("a", "b", 1.0), ("b", "c", 1.0)])
    assert layout.place(["a", "b", "c"], [("a", "b", 1.0), ("b", "c", 1.0)]) == first, "nothing new: no layout"
    nodes = [f"n{i}" for i in range(40)]
    links = [(f"n{i}", f"n{j}", 1.0) for i in range(40) for j in range(i + 1, min(i + 4, 40))]
    placed = layout.place(nodes, links)
    gaps = sorted(min(math.dist(placed[a], placed[b]) for b in nodes if b != a) for a in nodes)
    extent = max(max(abs(x), abs(y)) for x, y in placed.values())
    assert gaps[len(gaps) // 2] > 0.05 * extent, "the linked memories spread out instead of knotting"


def test_context_chart_compares_streaming_rag_and_all_memories():
    figure = viz.context_figure([stats(0), stats(4, memory=25, rag=45), stats(8, memory=20, rag=60)], swaps=[4])
    by_name = traces(figure)
    assert by_name["streaming memory"]["y"] == [120, 129, 128]
    assert by_name["classic RAG (all retrieved so far)"]["y"] == [120, 149, 168]
    assert by_name["all memories"]["y"] == [600, 604, 608]
    assert by_name["memory swap"]["x"] == [4] and by_name["memory swap"]["y"] == [129]
    assert viz.context_figure([]).layout.annotations, "an empty chart says what will appear"


def test_timeline_draws_a_bar_per_stretch_and_the_cursor():
    view = streamed_view()
    figure = viz.timeline_figure(view, at_token=6)
    bars = [(base, width) for trace in figure.data for base, width in zip(trace.base, trace.x, strict=True)]
    assert sorted(bars) == [(0, 4), (0, 8), (4, 6), (8, 2)]
    assert figure.layout.shapes[0].x0 == 6
    # Then one mark per swap: solid for an exact re-read, dotted for a slot rewrite.
    assert [(shape.x0, shape.line.dash) for shape in figure.layout.shapes[1:]] == [(4, "solid"), (8, "dot")]


# -- the visitor's actions -------------------------------------------------------------------------


def test_settings_are_validated_by_name_and_reach_pool_and_engine(pool):
    with pytest.raises(ValueError, match="update_every_n"):
        actions.GenerationSettings(update_every_n=0)
    with pytest.raises(ValueError, match="max_memories"):
        actions.GenerationSettings(max_memories=16)
    with pytest.raises(ValueError, match="temperature"):
        actions.GenerationSettings(temperature=float("nan"))
    settings = actions.GenerationSettings(update_every_n=7.0, diversity_weight=0.25, enable_thinking=0)
    assert settings.update_every_n == 7 and isinstance(settings.update_every_n, int)
    assert settings.enable_thinking is False
    assert settings.stream_kwargs()["update_every_n"] == 7
    with pytest.raises(ValueError, match="swap"):
        actions.GenerationSettings(swap="fast")
    assert settings.stream_kwargs()["swap"] is None  # auto: the engine decides by hardware
    assert actions.GenerationSettings(swap="slots").stream_kwargs()["swap"] == "slots"
    assert settings.stream_kwargs()["sample_memories"] is True
    with pytest.raises(ValueError, match="retrieval_trigger"):
        actions.GenerationSettings(retrieval_trigger="entropy")
    with pytest.raises(ValueError, match="lookahead_tokens"):
        actions.GenerationSettings(lookahead_tokens=65)
    for bad in (11, -1, 2.5, True, None, "2"):
        with pytest.raises(ValueError, match="extra_memories"):
            actions.GenerationSettings(extra_memories=bad)
    assert settings.stream_kwargs()["extra_memories"] is None  # auto: the engine decides by its reasoning
    anchored = actions.GenerationSettings(extra_memories=3.0, retrieval_trigger="uncertainty", uncertainty_threshold=0.2)
    wanted = {"extra_memories": 3, "retrieval_trigger": "uncertainty", "uncertainty_threshold": 0.2, "lookahead_tokens": 0}
    assert wanted.items() <= anchored.stream_kwargs().items()
    target = pool.copy()
    settings.apply_to(target)
    assert target.diversity_weight == 0.25


LIMITS = ApiSettings()


def test_actions_return_new_pools_and_leave_the_old_one_alone(pool):
    added = actions.add_memory(pool, "Alex started chess club", "insight", 0.4, LIMITS)
    assert len(added) == len(pool) + 1 and added is not pool
    with pytest.raises(MemoryFileError, match="content"):
        actions.add_memory(pool, "   ", None, 0.5, LIMITS)
    with pytest.raises(MemoryFileError, match="type"):
        actions.add_memory(pool, "ok", "not-a-type", 0.5, LIMITS)
    reset = actions.reset_learning(pool)
    assert reset.links() == [] and pool.links() != []


def test_learned_state_is_applied_only_to_a_pool_of_the_same_shape(pool):
    learned = pool.learning_state()
    target = pool.copy()
    target.reset_learning()
    assert actions.apply_learned(target, done(1, learned)) and target.links() == pool.links()
    view = AnswerView()
    view.apply(done(1, learned))
    assert view.take_learned() is learned and view.learned is None
    assert not actions.apply_learned(actions.add_memory(pool, "new", None, 0.5, LIMITS), done(1, learned))
    assert not actions.apply_learned(target, done(1, None))


def test_upload_errors_name_the_record_and_field(minilm):
    sets = MemorySets(minilm)
    with pytest.raises(MemoryFileError, match="record 2, field 'content'"):
        actions.upload(sets, json.dumps([{"content": "ok"}, {"content": ""}]).encode(), LIMITS)
    with pytest.raises(MemoryFileError, match="no file"):
        actions.upload(sets, None, LIMITS)
    assert len(actions.upload(sets, json.dumps([{"content": "ok"}]), LIMITS)) == 1


def test_uploads_and_pools_stay_within_the_limits(pool, minilm):
    sets = MemorySets(minilm)
    small = ApiSettings(max_upload_records=3, max_upload_bytes=2000, max_pool_memories=len(pool))
    with pytest.raises(MemoryFileError, match="holds 100000 records; at most 3"):
        actions.upload(sets, json.dumps([{"content": f"m{i}"} for i in range(100_000)]).encode(), ApiSettings(max_upload_records=3))
    with pytest.raises(MemoryFileError, match="at most 2000 are accepted"):
        actions.upload(sets, b"[" + b" " * 3000 + b"]", small)
    with pytest.raises(MemoryFileError, match=f"at most {len(pool)} memories"):
        actions.add_memory(pool, "one too many", None, 0.5, small)


def test_a_downloaded_learned_state_uploads_back_whole(pool, minilm, tmp_path):
    path = actions.save_learned(pool, "tutor", tmp_path)
    restored = actions.upload(MemorySets(minilm), path.read_bytes(), LIMITS)
    assert restored.memories == pool.memories and restored.links() == pool.links() and restored.links()
    with pytest.raises(MemoryFileError, match="not a readable pool file"):
        actions.upload(MemorySets(minilm), path.read_bytes()[:-40], LIMITS)


def test_switching_sets_puts_the_left_set_aside_and_gives_it_back(pool, minilm):
    sets = MemorySets(minilm)
    stash: dict = {}
    family, layout = actions.switch_set(stash, sets, "tutor", pool, "tutor layout", "family")
    assert layout is None and len(family.links()) == 0, "a first visit starts fresh"
    tutor, layout = actions.switch_set(stash, sets, "family", family, None, "tutor")
    assert tutor is pool and layout == "tutor layout" and list(stash) == ["family"]


def test_saved_learned_state_loads_back_and_old_downloads_are_pruned(pool, minilm, tmp_path):
    stale = tmp_path / "old.npz"
    stale.write_bytes(b"x")
    old = time.time() - actions.DOWNLOAD_TTL_S - 10
    os.utime(stale, (old, old))
    path = actions.save_learned(pool, "my set/../x", directory=tmp_path)
    assert path.parent == tmp_path and path.name.startswith("smem-my-set----x-learned-")
    assert not stale.exists()
    assert MemoryPool.load(path, minilm).links() == pool.links()


def test_status_line_escapes_the_label(pool):
    line = actions.describe(pool, "<b>mine</b>")
    assert "&lt;b&gt;mine&lt;/b&gt;" in line and "4 memories" in line and "2 learned links" in line
    assert "3 answers learned from" in line


def test_counts_take_the_right_number():
    assert [counted(n, "memory") for n in (0, 1, 2)] == ["0 memories", "1 memory", "2 memories"]
    assert counted(1, "answer") == "1 answer" and counted(3, "learned link") == "3 learned links"
    assert counted(2, "day") == "2 days"


def test_labels_that_would_overlap_are_left_to_the_hover_text():
    pos = {"a": (0.0, 0.0), "b": (0.1, 0.02), "c": (0.0, 0.5), "d": (2.0, 0.0), "e": (0.05, 0.51)}
    # b sits on a's label, e on c's: only the first of each pair is labelled, in priority order.
    assert viz.spaced_labels(["a", "b", "c", "d", "e"], pos, extent=1.0, limit=10) == {"a", "c", "d"}
    assert viz.spaced_labels(["b", "a"], pos, extent=1.0, limit=10) == {"b"}
    assert viz.spaced_labels(["a", "c", "d"], pos, extent=1.0, limit=2) == {"a", "c"}


def test_the_network_labels_no_two_memories_on_top_of_each_other(pool):
    for question in ("fractions quiz", "soccer word problems", "algebra session Thursday", "frustrated"):
        pool.retrieve(question)
    figure = viz.network_figure(pool, viz.NetworkLayout())
    labelled = [
        (x, y) for trace in figure.data if trace.mode == "markers+text" for x, y, text in zip(trace.x, trace.y, trace.text) if text
    ]
    assert len(labelled) >= 3
    extent = max(max(abs(x), abs(y)) for trace in figure.data if trace.mode == "markers+text" for x, y in zip(trace.x, trace.y))
    width, height = viz.LABEL_BOX[0] * extent, viz.LABEL_BOX[1] * extent
    for i, (x1, y1) in enumerate(labelled):
        for x2, y2 in labelled[i + 1 :]:
            assert abs(x1 - x2) >= width or abs(y1 - y2) >= height, "two labels overlap"


def test_the_recorded_example_replays_whole(minilm):
    """The app's cached example (assets/example-run.json, scripts/record_example.py) replays to
    the answer it recorded, with its memories and swaps, on the memory set it names."""
    from smem.memory.memory_sets import MemorySets
    from smem.ui import recorded

    record = recorded.load(Path(__file__).resolve().parents[1] / "assets" / "example-run.json")
    pool = MemorySets(minilm).pool(record["memory_set"])
    view = recorded.replay(record, pool)
    done = next(event for event in record["events"] if event["type"] == "done")
    assert view.done is not None and view.tokens == done["tokens"] > 0
    assert len(view.swaps) == done["swaps"] and view.current_ids
    assert set(view.current_ids) <= {memory.id for memory in pool.memories}
    assert "done" in view.status_line()


def test_timeline_sets_its_marks_in_one_go(monkeypatch):
    """`Figure.add_vline` re-validates every shape before it, so one call per swap made a
    redraw quadratic in the swaps (130 swaps: 5.2 s a redraw against 32 ms in one list, and a
    600-token answer streamed at 4 tokens/s instead of 23 on the tiny model)."""

    def one_at_a_time(*args, **kwargs):
        raise AssertionError("marks added one at a time")

    monkeypatch.setattr(go.Figure, "add_vline", one_at_a_time)
    monkeypatch.setattr(go.Figure, "add_shape", one_at_a_time)
    figure = viz.timeline_figure(streamed_view(), at_token=6)
    assert [shape.x0 for shape in figure.layout.shapes] == [6, 4, 8]
    assert {shape.yref for shape in figure.layout.shapes} == {"y domain"}, "each mark spans the plot's height"
