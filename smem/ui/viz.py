"""Figures and table rows for the app: the memories in context, the Hebbian network, the
context-size chart and the memory timeline.

Plotly renders a subset of HTML in hover text, tick labels and titles, and memory contents
come from visitors' uploads, so every piece of memory text is HTML-escaped before it
enters a figure. Table cells are plain strings (the table shows them as text).
"""

from __future__ import annotations

import bisect
import functools
import html
import math
import textwrap
from typing import Iterable, Mapping, Optional, Sequence

import networkx as nx
import plotly.graph_objects as go

from smem.generation.events import ContextStats
from smem.memory.records import Memory
from smem.memory.pool import MemoryPool
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

STATUS_LABELS = {ADDED: "🟢 added", KEPT: "⚪ kept", REMOVED: "🔴 removed"}
MEMORY_HEADERS = ["status", "memory", "type", "score", "from token"]

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
    """Table rows: status (visibly marked), content, type, score, token where it entered."""
    return [
        [STATUS_LABELS[row.status], row.hit.content, type_label(row.hit.type), round(row.hit.score, 3), row.entered_at]
        for row in rows
    ]


# -- the Hebbian network ---------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _layout(
    ids: tuple[str, ...], types: tuple[str, ...], links: tuple[tuple[str, str, float], ...]
) -> dict[str, tuple[float, float]]:
    """Node positions: each type gathers around a fixed hub on a ring, and learned links pull
    the memories they join towards each other (so what is used together moves to the middle).

    Hubs are pinned, so clusters cannot drift apart and the picture keeps its scale. Cached
    on the exact graph: redraws during an answer (only the highlight changes) reuse the
    positions, so nodes stay put until the links themselves change.
    """
    if not ids:
        return {}
    graph = nx.Graph()
    graph.add_nodes_from(ids)
    kinds = sorted(set(types))
    # Hub nodes are tuples, so no memory id (a string) can collide with one.
    hubs = {
        ("hub", kind): (math.cos(2 * math.pi * (i + 0.5) / len(kinds)), math.sin(2 * math.pi * (i + 0.5) / len(kinds)))
        for i, kind in enumerate(kinds)
    }
    start: dict[object, tuple[float, float]] = dict(hubs)
    for order, (memory_id, kind) in enumerate(zip(ids, types, strict=True)):
        hub_x, hub_y = hubs[("hub", kind)]
        angle, radius = order * 2.399, 0.15 * math.sqrt((order % 17) / 17)
        start[memory_id] = (hub_x + radius * math.cos(angle), hub_y + radius * math.sin(angle))
        graph.add_edge(memory_id, ("hub", kind), weight=1.0)
    strongest = max((w for _, _, w in links), default=1.0) or 1.0
    for a, b, weight in links:
        graph.add_edge(a, b, weight=0.5 + 2.0 * weight / strongest)
    positions = nx.spring_layout(graph, pos=start, fixed=list(hubs), k=0.12, iterations=100, seed=0, weight="weight")
    return {node: (float(positions[node][0]), float(positions[node][1])) for node in ids}


def node_size(count: float) -> float:
    """Area grows with retrieval count, but a much-retrieved memory must not hide the rest."""
    return 9.0 + 5.0 * math.sqrt(max(count, 0.0))


def network_figure(
    pool: MemoryPool,
    in_context: Iterable[str] = (),
    forming: Optional[Mapping[tuple[str, str], float]] = None,
) -> go.Figure:
    """The Hebbian network: memories as nodes (size by retrieval count, colour by type), learned
    co-retrieval links as edges (width by strength), the memories in context now ringed, and
    the links the current answer is forming dashed."""
    memories = pool.memories
    ids = tuple(memory.id for memory in memories)
    types = tuple(type_name(memory.type) for memory in memories)
    links = tuple(sorted((a, b, round(w, 4)) for a, b, w in pool.links()))
    pos = _layout(ids, types, links)
    counts = {memory.id: pool.retrieval_count(memory.id) for memory in memories}
    figure = go.Figure()

    strongest = max((w for _, _, w in links), default=0.0)
    bins: dict[int, tuple[list[Optional[float]], list[Optional[float]]]] = {}
    mid_x, mid_y, mid_text = [], [], []
    for a, b, weight in links:
        level = min(int(4 * weight / strongest), 3) if strongest > 0 else 0
        xs, ys = bins.setdefault(level, ([], []))
        (x0, y0), (x1, y1) = pos[a], pos[b]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
        mid_x.append((x0 + x1) / 2)
        mid_y.append((y0 + y1) / 2)
        mid_text.append(f"link {escape(a)} ↔ {escape(b)}<br>strength {weight:.3f}")
    for level, (xs, ys) in sorted(bins.items()):
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                hoverinfo="skip",
                showlegend=False,
                line={"width": 1.0 + 1.6 * level, "color": LINK_COLOUR},
                opacity=0.35 + 0.15 * level,
            )
        )
    if mid_x:
        figure.add_trace(
            go.Scatter(
                x=mid_x,
                y=mid_y,
                mode="markers",
                hovertext=mid_text,
                hoverinfo="text",
                showlegend=False,
                marker={"size": 8, "opacity": 0},
                name="links",
            )
        )

    if forming:
        xs, ys = [], []
        for (a, b), share in forming.items():
            if a in pos and b in pos and share > 0:
                xs += [pos[a][0], pos[b][0], None]
                ys += [pos[a][1], pos[b][1], None]
        if xs:
            figure.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    hoverinfo="skip",
                    name="forming now",
                    line={"width": 1.5, "color": FORMING_COLOUR, "dash": "dot"},
                )
            )

    hover = {
        memory.id: (
            f"<b>{escape(type_label(memory.type))}</b> · {escape(memory.id)} · "
            f"retrieved {counts[memory.id]:g}×<br>{escape_wrapped(memory.content)}"
        )
        for memory in memories
    }
    for kind in sorted(set(types)):
        members = [memory for memory in memories if type_name(memory.type) == kind]
        figure.add_trace(
            go.Scatter(
                x=[pos[m.id][0] for m in members],
                y=[pos[m.id][1] for m in members],
                mode="markers",
                name=escape(type_label(kind)),
                hovertext=[hover[m.id] for m in members],
                hoverinfo="text",
                marker={
                    "size": [node_size(counts[m.id]) for m in members],
                    "color": type_colour(members[0].type),
                    "line": {"width": 0.8, "color": "white"},
                    "opacity": 0.9,
                },
            )
        )
    ringed = [memory_id for memory_id in in_context if memory_id in pos]
    figure.add_trace(
        go.Scatter(
            x=[pos[i][0] for i in ringed],
            y=[pos[i][1] for i in ringed],
            mode="markers",
            name="in context now",
            hovertext=[hover[i] for i in ringed],
            hoverinfo="text",
            marker={
                "size": [node_size(counts[i]) + 10 for i in ringed],
                "symbol": "circle-open",
                "color": IN_CONTEXT_COLOUR,
                "line": {"width": 3, "color": IN_CONTEXT_COLOUR},
            },
        )
    )
    figure.update_layout(
        title={"text": f"Hebbian network · {len(memories)} memories · {len(links)} links", "x": 0.01},
        showlegend=True,
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "font": {"size": 11}},
        xaxis={"visible": False},
        yaxis={"visible": False, "scaleanchor": "x"},
        margin={"l": 8, "r": 8, "t": 36, "b": 8},
        height=480,
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
    if at_token is not None:
        figure.add_vline(x=at_token, line={"width": 2, "color": "#111827"})
    for token, exact in view.swaps():
        # Solid: the swap re-read the context exactly; dotted: a slot rewrite (approximate).
        figure.add_vline(x=token, line={"width": 1, "color": "#9ca3af", "dash": "solid" if exact else "dot"})
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
    )
    return figure


def _placeholder(figure: go.Figure, text: str) -> None:
    """A grey hint in the middle of a figure that has nothing to show yet."""
    figure.add_annotation(
        text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"color": "#6b7280"}
    )
