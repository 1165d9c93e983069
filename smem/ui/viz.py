"""Figures and table rows for the app: the memories in context, the Hebbian network, the
context-size chart and the memory timeline.

Plotly renders a subset of HTML in hover text, tick labels and titles, and memory contents
come from visitors' uploads, so every piece of memory text is HTML-escaped before it
enters a figure. Table cells are plain strings (the table shows them as text).

Presentation numbers (font and marker sizes, line widths, opacities, margins, heights, wrap
widths, colours) were chosen by eye in the app at its 480 px panel width; none is measured,
and none changes what is retrieved. The layout constants below say where theirs came from.
"""

from __future__ import annotations

import bisect
import copy
import html
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import networkx as nx
import numpy as np
import plotly.graph_objects as go

from smem.generation.events import ContextStats
from smem.memory.records import Hit, Memory
from smem.memory.pool import MemoryPool
from smem.memory.wording import counted
from smem.ui.answer_view import ADDED, KEPT, REMOVED, AnswerView, MemoryRow

TYPE_COLOURS: dict[str, str] = {
    "current_state": "#1f77b4",
    "what_works": "#2ca02c",
    "pattern": "#9467bd",
    "insight": "#ff7f0e",
    "relationship": "#e377c2",
    "parent": "#8c564b",
    "behavior": "#d62728",
}
UNTYPED = "untyped"
UNTYPED_COLOUR = "#7f7f7f"
IN_CONTEXT_COLOUR = "#f5b700"
FORMING_COLOUR = "#f5b700"
LINK_COLOUR = "#6b7280"
ENCODING_COLOUR = "#60a5fa"
PULLED_COLOUR = "#dc2626"
PULLED_NAME = "pulled the clicked memory in"
LEARNED_NAME = "learned link (used together)"
ENCODING_NAME = "encoding link (written together)"
UNLINKED_COLOUR = "#9ca3af"

STATUS_LABELS = {ADDED: "🟢 added", KEPT: "⚪ kept", REMOVED: "🔴 removed"}
MEMORY_HEADERS = ["status", "memory", "type", "score", "from token", "pulled in by"]
LINK_KINDS = {"encoding": "written together", "learned": "used together"}
"""How each kind of `Pull` reads to a visitor: the legend's words for the two kinds of link."""

_FONT = {"family": "Inter, system-ui, sans-serif", "size": 12}


def type_name(memory_type: Optional[str]) -> str:
    return memory_type or UNTYPED


def type_label(memory_type: Optional[str]) -> str:
    """How a type reads in the table and legends ("current state", not "current_state")."""
    return type_name(memory_type).replace("_", " ")


def type_colour(memory_type: Optional[str]) -> str:
    return TYPE_COLOURS.get(memory_type or "", UNTYPED_COLOUR)


def escape(text: str) -> str:
    """Text made inert for Plotly's HTML subset: no tag can form once <, > and & are escaped.
    Quotes stay as they are (Plotly shows &quot; literally)."""
    return html.escape(text, quote=False)


def escape_wrapped(text: str, width: int = 60, max_lines: int = 8) -> str:
    """Memory text made safe for Plotly: wrapped, then each line escaped (so an entity is
    never cut in half), joined with Plotly's <br>."""
    lines = textwrap.wrap(text, width=width, max_lines=max_lines, placeholder=" …") or [""]
    return "<br>".join(escape(line) for line in lines)


def short_label(memory: Memory, width: int = 38) -> str:
    """An escaped one-line label: id and the start of the content."""
    return escape(f"{memory.id} · {textwrap.shorten(memory.content, width=width, placeholder='…')}")


# -- the table --------------------------------------------------------------------------------


def memory_rows(rows: Iterable[MemoryRow]) -> list[list[object]]:
    """Table rows: status (visibly marked), content, type, score, token where it entered, and
    the links that pulled it in."""
    rows = list(rows)
    contents = {row.hit.id: row.hit.content for row in rows}
    return [
        [
            STATUS_LABELS[row.status],
            row.hit.content,
            type_label(row.hit.type),
            round(row.hit.score, 3),
            row.entered_at,
            pulled_in_by(row.hit, contents),
        ]
        for row in rows
    ]


def pulled_in_by(hit: Hit, contents: Mapping[str, str], width: int = 36) -> str:
    """One line per link that raised this memory's score, strongest first: the memory picked
    before it at the other end (its start, from `contents`, else its id) and the kind of link.
    Empty when its similarity and its own history chose it."""
    return "\n".join(
        f"🔗 “{textwrap.shorten(contents.get(pull.id, pull.id), width=width, placeholder='…')}”"
        f" ({LINK_KINDS.get(pull.kind, pull.kind)})"
        for pull in hit.pulled_by
    )


def _habituation(hit: Hit) -> str:
    """The habituation factor of a score, shown when it damped the memory: the selection
    scores max(similarity, 0)² × habituation × multiplier (`smem.memory.selection`)."""
    gate = max(hit.similarity, 0.0) ** 2 * hit.multiplier
    factor = hit.score / gate if gate > 0 else 1.0
    return f" × habituation {factor:.2f} (many different questions reach it)" if factor < 0.995 else ""


def clicked_row(rows: Sequence[MemoryRow], content: Optional[str]) -> Optional[MemoryRow]:
    """The row of the answer's view that a click on the table's row showing `content` means
    (the table may be sorted by a column, so its row index is not the view's)."""
    return next((row for row in rows if row.hit.content == content), None)


def memory_detail(rows: Sequence[MemoryRow], content: Optional[str]) -> str:
    """Markdown for one clicked row of the table: the memory, its score and what it is made
    of, and every link that pulled it in, with the memory at the other end in full."""
    return _detail(clicked_row(rows, content), rows, content)


def explain_click(
    view: Optional[AnswerView], content: Optional[str], pool: MemoryPool, layout: NetworkLayout
) -> tuple[str, Optional[go.Figure]]:
    """What a click on the table's row showing `content` shows: `memory_detail`, and the network
    with the links that pulled that memory in drawn red, or None where no link did (the network
    stays as drawn). The figure lays out a copy of `layout`: a live answer may be redrawing the
    network from it meanwhile."""
    rows = view.rows() if view else []
    row = clicked_row(rows, content)
    detail = _detail(row, rows, content)
    if view is None or row is None or not row.hit.pulled_by:
        return detail, None
    return detail, network_figure(pool, copy.deepcopy(layout), view.current_ids, pulled=row.hit)


def _detail(row: Optional[MemoryRow], rows: Sequence[MemoryRow], content: Optional[str]) -> str:
    if row is None:
        if content is None:
            return "Click a memory in the table to see why it is in context."
        return "No details for that row: they come with an answer written here (not the recorded replay)."
    hit = row.hit
    contents = {other.hit.id: other.hit.content for other in rows}
    lines = [
        f"**{STATUS_LABELS[row.status]}** · in context from token {row.entered_at} · {html.escape(type_label(hit.type))}",
        "",
        f"> {html.escape(hit.content)}",
        "",
        f"Score **{hit.score:.3f}** = similarity {hit.similarity:.3f}² × Hebbian multiplier **{hit.multiplier:.2f}**"
        " (1 to 2: recency, use, emotion and links)" + _habituation(hit) + ".",
        "",
    ]
    if not hit.pulled_by:
        lines.append("No link pulled it in: its similarity to what was being written chose it.")
    else:
        lines.append(f"**Pulled in by {counted(len(hit.pulled_by), 'link')}** from memories picked before it:")
        lines += [
            f"- {pull.kind} link ({LINK_KINDS.get(pull.kind, pull.kind)}), weight {pull.weight:.2f}, from"
            f" “{html.escape(contents.get(pull.id, pull.id))}”"
            for pull in hit.pulled_by
        ]
    return "\n".join(lines)


# -- the Hebbian network ---------------------------------------------------------------------

MAX_LAID_OUT = 300
"""Most memories the spring layout places. Its cost is quadratic in the nodes it moves
(networkx's dense Fruchterman-Reingold below 500 nodes); docs/benchmarks.md has the figures.
Past this many linked memories, the most strongly linked are drawn and the rest join the
faint background."""
LABELLED = 8
"""Linked memories that carry a text label besides those in context: more overlap at 480 px."""
LABEL_BOX = (1.3, 0.18)
"""A label's width and height in units of the layout's extent: the plot shows about 3 extents
in ~340 px (440 px high, less title and legend), so 1 px is ~0.009 extent, and a 28-character
label at 10 px is ~150 px wide and ~13 px high; with ~6 px between lines (0.18 extent), labels
closer than this overlap or read as one."""
FAINT_VISIBLE_UP_TO = 2000
"""Larger pools start with their unlinked background hidden (click its legend entry to show
it): thousands of faint dots would only grey the plot out."""
GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))  # Vogel's sunflower spiral: successive points never line up
ITERATIONS = 15
"""Cooling steps when memories join a laid-out picture (50, networkx's default, for the first)."""
GRAVITY = 0.5
"""Weight of each memory's pull to the centre, against 1 for a learned link
(bench/network_spread.py, docs/benchmarks.md "The Hebbian network figure"). At 0.05 the
weakly linked memories drifted far out and the strongly linked core, drawn to that scale,
became a knot (median nearest-neighbour gap 0.09 of the half-width after 12 answers of the
tutor set); 0.5 gives 0.16, at the price of known memories moving 0.31 of the half-width per
answer instead of 0.25."""


@dataclass
class NetworkLayout:
    """Where each drawn memory sits, kept between redraws so that a new link moves only the
    memories it brings in: known memories stay pinned, newcomers start beside the memories
    they link to and settle around them. One per visitor and memory set."""

    positions: dict[str, tuple[float, float]] = field(default_factory=dict)

    def place(self, nodes: Sequence[str], links: Sequence[tuple[str, str, float]]) -> dict[str, tuple[float, float]]:
        """Positions of `nodes` (linked or in context), laid out again only when one is new.

        The new layout starts from the cached positions (newcomers beside their neighbours)
        and runs only a few cooling steps, so known memories move a little, not anew."""
        new = [node for node in nodes if node not in self.positions]
        if new:
            graph = nx.Graph()
            graph.add_nodes_from(nodes)
            graph.add_weighted_edges_from(links)
            start: dict[Any, tuple[float, float]] = {node: self.positions[node] for node in nodes if node in self.positions}
            k = 1 / math.sqrt(len(nodes))  # networkx's default natural length on the unit square
            for node in new:
                start[node] = self._beside(node, graph, start, k)
            # A weak pull towards the centre: without it, groups that share no link repel
            # each other without bound and the picture shrinks to far-apart specks.
            # (A tuple, so no memory id, a string, can collide with it.)
            centre = ("centre",)
            start[centre] = (0.0, 0.0)
            graph.add_weighted_edges_from((node, centre, GRAVITY) for node in nodes)
            placed = nx.spring_layout(
                graph, pos=start, k=k, iterations=ITERATIONS if self.positions else 50, seed=0, weight="weight"
            )
            self.positions = {node: (float(placed[node][0]), float(placed[node][1])) for node in nodes}
        return {node: self.positions[node] for node in nodes}

    @staticmethod
    def _beside(node: str, graph: nx.Graph, start: Mapping[Any, tuple[float, float]], k: float) -> tuple[float, float]:
        """A newcomer's starting point: one spacing from its placed neighbours' centre, else
        on a spiral around the picture."""
        turn = len(start) * GOLDEN_ANGLE
        near = [start[other] for other in graph.neighbors(node) if other in start]
        if near:
            x = sum(p[0] for p in near) / len(near)
            y = sum(p[1] for p in near) / len(near)
            return x + k * math.cos(turn), y + k * math.sin(turn)
        # Radius 0.6–1.0 cycling over 7 steps (chosen: inside the background ring at 1.25).
        radius = 0.6 + 0.4 * (len(start) % 7) / 7
        return radius * math.cos(turn), radius * math.sin(turn)


def background_positions(count: int, inner: float = 1.25, outer: float = 1.6) -> np.ndarray:
    """Unlinked memories on a faint sunflower ring around the linked picture, as (count, 2)
    points: O(n), stable, no layout (the ring's order is the pool's)."""
    order = np.arange(count)
    radius = np.sqrt(inner**2 + (outer**2 - inner**2) * (order + 0.5) / max(count, 1))
    angle = order * GOLDEN_ANGLE
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])


def node_size(count: float) -> float:
    """Area grows with retrieval count, but a much-retrieved memory must not hide the rest."""
    return 14.0 + 4.0 * math.sqrt(max(count, 0.0))


def label(memory: Memory, width: int = 28) -> str:
    """A node's short escaped label: the start of its content."""
    return escape(textwrap.shorten(memory.content, width=width, placeholder="…"))


def _hover(memory: Memory, count: float) -> str:
    return f"<b>{escape(type_label(memory.type))}</b> · retrieved {count:g}×<br>{escape_wrapped(memory.content)}"


def _drawn(
    links: Sequence[tuple[str, str, float]], in_context: Sequence[str], shown: Iterable[tuple[str, str]]
) -> list[str]:
    """The memories drawn large: in context, at either end of a link `shown` (forming now, or
    pulling a clicked memory in), or linked (the most strongly linked first, up to
    MAX_LAID_OUT in all)."""
    strength: dict[str, float] = {}
    for a, b, weight in links:
        strength[a] = strength.get(a, 0.0) + weight
        strength[b] = strength.get(b, 0.0) + weight
    must = list(dict.fromkeys([*in_context, *(node for pair in shown for node in pair)]))
    ranked = sorted((node for node in strength if node not in must), key=lambda node: (-strength[node], node))
    return must + ranked[: max(MAX_LAID_OUT - len(must), 0)]


def _encoding_among(pool: MemoryPool, drawn: Sequence[str]) -> list[tuple[str, str, float]]:
    """Encoding links whose both ends are drawn, found over the link arrays (a dated pool has
    about two per memory, too many to list as tuples on every redraw of a large pool)."""
    state = pool.learning
    positions = np.array([pool.position(memory_id) for memory_id in drawn], dtype=np.int64)
    inside = np.isin(state.encoded_a, positions) & np.isin(state.encoded_b, positions)
    memories = pool.memories
    return sorted(
        (memories[a].id, memories[b].id, w)
        for a, b, w in zip(state.encoded_a[inside].tolist(), state.encoded_b[inside].tolist(), state.encoded_w[inside].tolist())
    )


def _segments(
    pairs: Iterable[tuple[str, str]], pos: Mapping[str, tuple[float, float]]
) -> tuple[list[Optional[float]], list[Optional[float]]]:
    """Line segments between node pairs as one Plotly trace's x and y (None breaks the line)."""
    xs: list[Optional[float]] = []
    ys: list[Optional[float]] = []
    for a, b in pairs:
        xs += [pos[a][0], pos[b][0], None]
        ys += [pos[a][1], pos[b][1], None]
    return xs, ys


def _edges(pairs: Iterable[tuple[str, str]], pos: Mapping[str, tuple[float, float]], name: str, line: dict, **style: Any) -> go.Scatter:
    """One kind of link as one trace of line segments, without hover (links have no text)."""
    xs, ys = _segments(pairs, pos)
    return go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", name=name, line=line, **style)


def spaced_labels(
    candidates: Sequence[str], pos: Mapping[str, tuple[float, float]], extent: float, limit: int
) -> set[str]:
    """Which nodes get a text label: in priority order, each whose label would not overlap one
    already kept (`LABEL_BOX`), `limit` at most; the others keep their hover text. A dense
    cluster otherwise stacks its labels into an unreadable smear. (A loop over at most
    `limit` kept labels, ~13, not over the pool.)"""
    width, height = LABEL_BOX[0] * extent, LABEL_BOX[1] * extent
    kept: list[tuple[float, float]] = []
    chosen: set[str] = set()
    for node in candidates:
        if len(chosen) >= limit:
            break
        x, y = pos[node]
        if all(abs(x - kx) >= width or abs(y - ky) >= height for kx, ky in kept):
            kept.append((x, y))
            chosen.add(node)
    return chosen


def network_figure(
    pool: MemoryPool,
    layout: Optional[NetworkLayout] = None,
    in_context: Iterable[str] = (),
    forming: Optional[Mapping[tuple[str, str], float]] = None,
    pulled: Optional[Hit] = None,
) -> go.Figure:
    """The Hebbian network: linked and in-context memories large, labelled and coloured by
    type (size by retrieval count, full text on hover), learned co-retrieval links as solid
    grey edges (width by strength, no hover), encoding links (memories added together on one
    day) as thin dashed blue edges, each kind with its legend entry, the memories in context
    now ringed, the links the current answer is forming dotted, the links that pulled the
    memory `pulled` in (a row clicked in the table) thick red, and every other memory a faint
    dot on an outer ring.

    Learned links choose which memories are drawn; encoding links are drawn only between
    memories drawn anyway. A dated memory set has an encoding link for almost every memory,
    so letting them choose would draw the whole set from the first answer on."""
    layout = layout if layout is not None else NetworkLayout()
    forming = {pair: share for pair, share in (forming or {}).items() if share > 0}
    memories = pool.memories
    by_id = {memory.id: memory for memory in memories}
    in_context = [memory_id for memory_id in in_context if memory_id in by_id]
    links = sorted((a, b, round(w, 4)) for a, b, w in pool.links())
    pulls = [(pulled.id, pull.id) for pull in pulled.pulled_by if pull.id in by_id] if pulled else []
    drawn = _drawn(links, in_context, [*forming, *pulls])
    drawn_set = set(drawn)
    drawn_links = [(a, b, w) for a, b, w in links if a in drawn_set and b in drawn_set]
    encoding = _encoding_among(pool, drawn)
    pos = layout.place(drawn, drawn_links + encoding)
    counts = pool.learning.counts
    count = {memory.id: float(counts[index]) for index, memory in enumerate(memories) if memory.id in drawn_set}
    figure = go.Figure()

    background = [memory for memory in memories if memory.id not in drawn_set]
    extent = max((max(abs(x), abs(y)) for x, y in pos.values()), default=1.0)
    ring = background_positions(len(background), inner=1.2 * extent, outer=1.5 * extent)
    # One colour and unwrapped hover text: per-point colours and wrapping cost seconds at 10k
    # memories (bench/network_layout.py), and these dots are meant to recede anyway. Past
    # FAINT_VISIBLE_UP_TO they start hidden and carry no text at all.
    faint = len(background) <= FAINT_VISIBLE_UP_TO
    if background:
        figure.add_trace(
            go.Scatter(
                x=ring[:, 0],
                y=ring[:, 1],
                mode="markers",
                name=f"unlinked ({len(background)})",
                hovertext=[escape(textwrap.shorten(m.content, width=120, placeholder="…")) for m in background]
                if faint
                else None,
                hoverinfo="text" if faint else "skip",
                marker={"size": 5, "color": UNLINKED_COLOUR, "opacity": 0.35},
                visible=True if faint else "legendonly",
            )
        )

    strongest = max((w for _, _, w in drawn_links), default=0.0)
    levels: dict[int, list[tuple[str, str]]] = {}
    for a, b, weight in drawn_links:
        levels.setdefault(min(int(4 * weight / strongest), 3) if strongest > 0 else 0, []).append((a, b))
    for number, (level, pairs) in enumerate(sorted(levels.items())):
        line = {"width": 1.0 + 1.6 * level, "color": LINK_COLOUR}
        figure.add_trace(
            _edges(
                pairs, pos, LEARNED_NAME, line, legendgroup=LEARNED_NAME, showlegend=number == 0, opacity=0.35 + 0.15 * level
            )
        )
    if encoding:
        line = {"width": 1.2, "color": ENCODING_COLOUR, "dash": "dash"}
        figure.add_trace(_edges(((a, b) for a, b, _ in encoding), pos, ENCODING_NAME, line, opacity=0.8))
    if forming:
        figure.add_trace(_edges(forming, pos, "forming now", {"width": 1.5, "color": FORMING_COLOUR, "dash": "dot"}))
    if pulls:
        figure.add_trace(_edges(pulls, pos, PULLED_NAME, {"width": 4, "color": PULLED_COLOUR}))

    # Those in context first, then the most linked (`drawn`'s order).
    context_set = set(in_context)
    candidates = [*in_context, *(node for node in drawn if node not in context_set)]
    labelled = spaced_labels(candidates, pos, extent, limit=len(in_context) + LABELLED)
    for kind in sorted({type_name(by_id[node].type) for node in drawn}):
        members = [by_id[node] for node in drawn if type_name(by_id[node].type) == kind]
        figure.add_trace(
            go.Scatter(
                x=[pos[m.id][0] for m in members],
                y=[pos[m.id][1] for m in members],
                mode="markers+text",
                name=escape(type_label(kind)),
                text=[label(m) if m.id in labelled else "" for m in members],
                textposition="top center",
                textfont={"size": 10, "color": "#374151"},
                hovertext=[_hover(m, count[m.id]) for m in members],
                hoverinfo="text",
                marker={
                    "size": [node_size(count[m.id]) for m in members],
                    "color": type_colour(members[0].type),
                    "line": {"width": 1, "color": "white"},
                    "opacity": 0.95,
                },
            )
        )
    figure.add_trace(
        go.Scatter(
            x=[pos[i][0] for i in in_context],
            y=[pos[i][1] for i in in_context],
            mode="markers",
            name="in context now",
            hoverinfo="skip",
            marker={
                "size": [node_size(count[i]) + 10 for i in in_context],
                "symbol": "circle-open",
                "color": IN_CONTEXT_COLOUR,
                "line": {"width": 3, "color": IN_CONTEXT_COLOUR},
            },
        )
    )
    if not drawn:
        _placeholder(figure, "Links form here as memories are used together")
    figure.update_layout(
        title={
            "text": f"Hebbian network · {counted(len(memories), 'memory')} · {counted(len(links), 'learned link')}",
            "x": 0.01,
        },
        showlegend=True,
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "font": {"size": 11}},
        xaxis={"visible": False},
        yaxis={"visible": False, "scaleanchor": "x"},
        margin={"l": 8, "r": 8, "t": 36, "b": 8},
        height=440,
        hovermode="closest",
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
        font=_FONT,
        uirevision="network",
    )
    return figure


# -- context size ---------------------------------------------------------------------------


def _value_at(xs: Sequence[int], ys: Sequence[int], x: int) -> int:
    """The step line's value at `x` (the last point at or before it)."""
    position = bisect.bisect_right(xs, x) - 1
    return ys[max(position, 0)]


def context_figure(stats: Sequence[ContextStats], swaps: Sequence[int] = ()) -> go.Figure:
    """Tokens the model attends to while answering, three ways: streaming memory (only the
    memories in context now), classic RAG (every memory retrieved so far kept), and every
    memory in the pool."""
    figure = go.Figure()
    if stats:
        x = [s.generated_tokens for s in stats]
        lines = {
            "all memories": [s.prompt_tokens + s.all_memory_tokens + s.generated_tokens for s in stats],
            "classic RAG (all retrieved so far)": [
                s.prompt_tokens + s.rag_memory_tokens + s.generated_tokens for s in stats
            ],
            "streaming memory": [s.prompt_tokens + s.memory_tokens + s.generated_tokens for s in stats],
        }
        styles = {
            "all memories": {"color": "#9ca3af", "dash": "dot"},
            "classic RAG (all retrieved so far)": {"color": "#ef4444"},
            "streaming memory": {"color": "#2563eb", "width": 3},
        }
        for name, y in lines.items():
            figure.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, line={"shape": "hv", **styles[name]}))
        if swaps:
            streaming = lines["streaming memory"]
            at = [_value_at(x, streaming, token) for token in swaps]
            figure.add_trace(
                go.Scatter(
                    x=list(swaps),
                    y=at,
                    mode="markers",
                    name="memory swap",
                    marker={"symbol": "diamond", "size": 7, "color": "#2563eb"},
                    hovertemplate="swap at token %{x}<extra></extra>",
                )
            )
    else:
        _placeholder(figure, "Send a message to see the context grow")
    figure.update_layout(
        title={"text": "Tokens in context", "x": 0.01},
        xaxis={"title": "generated tokens", "rangemode": "tozero"},
        yaxis={"title": "context tokens", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.25, "font": {"size": 11}},
        margin={"l": 56, "r": 12, "t": 36, "b": 8},
        height=320,
        font=_FONT,
        paper_bgcolor="rgba(0,0,0,0)",
    )
    return figure


# -- the timeline ---------------------------------------------------------------------------


def timeline_figure(view: AnswerView, at_token: Optional[int] = None) -> go.Figure:
    """Which memories were in context over the answer: one row per memory, a bar for each
    stretch it stayed; `at_token` draws the cursor the timeline slider controls."""
    figure = go.Figure()
    intervals = view.intervals()
    labels: dict[str, str] = {}
    for interval in intervals:
        labels.setdefault(interval.hit.id, short_label(interval.hit.memory))
    by_type: dict[str, list] = {}
    for interval in intervals:
        by_type.setdefault(type_name(interval.hit.type), []).append(interval)
    for kind, items in sorted(by_type.items()):
        figure.add_trace(
            go.Bar(
                orientation="h",
                y=[labels[i.hit.id] for i in items],
                x=[max(i.end - i.start, 0.6) for i in items],
                base=[i.start for i in items],
                marker={"color": type_colour(items[0].hit.type)},
                name=escape(type_label(kind)),
                hovertext=[f"tokens {i.start}–{i.end}<br>{escape_wrapped(i.hit.content)}" for i in items],
                hoverinfo="text",
            )
        )
    # Solid: the swap re-read the context exactly; dotted: a splice or slot rewrite (approximate).
    lines = [
        _vline(token, {"width": 1, "color": "#9ca3af", "dash": "solid" if exact else "dot"})
        for token, exact in view.swap_marks()
    ]
    if at_token is not None:
        lines.insert(0, _vline(at_token, {"width": 2, "color": "#111827"}))
    if not intervals:
        _placeholder(figure, "The memories of each stretch of the answer appear here")
    rows = len(labels)
    figure.update_layout(
        title={"text": "Memory timeline", "x": 0.01},
        barmode="overlay",
        xaxis={"title": "generated token", "rangemode": "tozero"},
        yaxis={"autorange": "reversed", "categoryorder": "array", "categoryarray": list(labels.values())},
        showlegend=False,
        margin={"l": 8, "r": 12, "t": 36, "b": 8},
        height=min(max(220, 22 * rows + 90), 900),
        font=_FONT,
        paper_bgcolor="rgba(0,0,0,0)",
        shapes=lines,
    )
    return figure


def _vline(x: float, line: dict) -> dict:
    """The shape `Figure.add_vline` makes (a line across the plot at `x`), as a dict: set all at
    once, a long answer's swap marks cost one validation, where `add_vline` per mark re-validated
    every mark before it (quadratic: 40% of the app's CPU on a 600-token answer with 130 swaps)."""
    return {"type": "line", "x0": x, "x1": x, "xref": "x", "y0": 0, "y1": 1, "yref": "y domain", "line": line}


def _placeholder(figure: go.Figure, text: str) -> None:
    """A grey hint in the middle of a figure that has nothing to show yet."""
    figure.add_annotation(
        text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"color": "#6b7280"}
    )
