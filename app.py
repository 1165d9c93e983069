"""Streaming Memory — the Gradio Space: a chat whose memories change while it answers.

This file only wires widgets to `smem`: per-visitor actions live in `smem.ui.actions`, the event
stream's reduction into view state in `smem.ui.answer_view`, figures and table rows in
`smem.ui.viz`, the MCP tools in `smem.ui.agent_tools`; long texts in `assets/*.md`. The HTTP
API (`smem.serving.api`) is served by the same process, and so is an MCP server
(`/gradio_api/mcp/`) offering `retrieve_memories`, `add_memory` and `chat`.

Sending a message is two chained events, as in Gradio's chatbot demos: `echo` shows the
question and clears the last answer's panels at once, then `respond` streams the answer.
Handlers return `{component: value}` dicts, so each names what it changes.

How it starts: locally (`python app.py`) the API app is served by uvicorn on 127.0.0.1:7860
with the Gradio UI mounted at `/`. On a Space it calls `demo.launch()` (ZeroGPU hooks its
start-up, packing the model's weights for the GPU workers, into `launch`) and mounts the
API on the app Gradio serves.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import spaces  # noqa: E402  (before torch: on ZeroGPU it patches CUDA at import)

import contextlib  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, AsyncIterator, Iterator, Optional  # noqa: E402

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from smem.generation import models  # noqa: E402
from smem.ui import actions, agent_tools, answer_view, recorded, viz  # noqa: E402
from smem.serving.api import create_api, not_found  # noqa: E402
from smem.generation.events import Event  # noqa: E402
from smem.memory.records import MemoryFileError  # noqa: E402
from smem.memory.pool import MemoryPool  # noqa: E402
from smem.memory.wording import counted  # noqa: E402
from smem.serving import prompt_budget  # noqa: E402
from smem.serving.runtime import Runtime  # noqa: E402
from smem.serving.session_store import SQLiteSessionStore  # noqa: E402
from smem.serving.settings import Settings  # noqa: E402
from smem.ui.answer_view import AnswerView, Changed  # noqa: E402
from smem.ui.visitor_state import VisitorStates, browser_secret  # noqa: E402


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

LOG = logging.getLogger("smem.app")
ON_SPACES = bool(os.environ.get("SPACE_ID"))
ON_GPU = torch.cuda.is_available()

# Loaded at import (ZeroGPU packs module-level CUDA tensors at launch); read onto the CPU
# first and then moved, the pattern ZeroGPU supports, in the dtype the GPU wants.
SETTINGS = Settings.from_cli() if __name__ == "__main__" else Settings()
"""Every knob, from the environment and, for `python app.py`, its flags (read before the model
loads, so `--model.*` and `--memory.*` flags count too); logged by `main`."""
RUNTIME = Runtime.load(
    models.resolve_model_id(SETTINGS.model.model, "cuda" if ON_GPU else "cpu"),
    device="cpu",
    dtype=models.choose_dtype("cuda", SETTINGS.model.dtype) if ON_GPU else SETTINGS.model.dtype,
    threads=SETTINGS.model.threads,
    memory=SETTINGS.memory,
)
if ON_GPU:
    RUNTIME.model.to("cuda")

LIMITS = SETTINGS.api
"""The same limits for the UI and the HTTP API."""
SET_NAMES = RUNTIME.sets.names
DEFAULT_SET = RUNTIME.sets.default
DEFAULTS = actions.app_defaults(SETTINGS.memory, ON_GPU)


@spaces.GPU(duration=actions.gpu_seconds)
def generate(
    pool: MemoryPool,
    message: str,
    history: list[dict[str, str]],
    settings: actions.GenerationSettings,
    cancel: Optional[threading.Event] = None,
) -> Iterator[Event]:
    """The answer, as engine events. On ZeroGPU this runs in a forked worker: `pool` arrives
    pickled and what it learns leaves in the final `Done` event; `cancel` cannot cross into
    the worker, so there Stop closes the stream instead."""
    yield from actions.answer(RUNTIME.engine(pool), message, history, settings, cancel)


@spaces.GPU(duration=actions.api_gpu_seconds)
def _answer_for_api(pool: MemoryPool, kwargs: dict[str, Any]) -> Iterator[Event]:
    yield from RUNTIME.engine(pool).stream(**kwargs, return_learned=True)


def generate_for_api(pool: MemoryPool, kwargs: dict[str, Any], cancel: threading.Event) -> Iterator[Event]:
    """The HTTP API's answers on a ZeroGPU Space (see smem.serving.api.Generate). The worker cannot see
    `cancel`, so a client that leaves stops the answer by closing the worker's stream; such an
    abandoned answer learns nothing."""
    stream = _answer_for_api(pool, kwargs)
    try:
        for event in stream:
            yield event
            if cancel.is_set():
                return
    finally:
        stream.close()


ASSETS = Path(__file__).resolve().parent / "assets"
EXAMPLE_RUN = ASSETS / "example-run.json"
"""Recorded by scripts/record_example.py; the cached example replays it."""
STOPS = actions.StopButtons()
VISITORS = VisitorStates(
    SQLiteSessionStore(SETTINGS.server.state_dir / "visitors.sqlite3", ttl_s=LIMITS.session_ttl_s),
    RUNTIME.sets,
    RUNTIME.embedder,
)
"""Visitors' learned state, kept across reloads and restarts (their browsers keep only ids)."""


def build_demo() -> gr.Blocks:
    initial_pool = RUNTIME.sets.pool(DEFAULT_SET)
    with gr.Blocks(title="Streaming Memory", fill_width=True) as demo:
        # Each visitor gets a deep copy; dropped when the page closes, or after a few idle
        # hours for API clients that never disconnect.
        pool_state = gr.State(initial_pool, time_to_live=4 * 3600)
        label_state = gr.State(DEFAULT_SET)
        view_state = gr.State(None)
        layout_state = gr.State(viz.NetworkLayout())
        stash_state = gr.State({}, time_to_live=4 * 3600)
        # The ids of the visitor's stored sets: kept by their browser (`browser_ring`), mirrored in
        # a State for the handlers, since API clients (gradio_client) send no browser state.
        browser_ring = gr.BrowserState({}, storage_key="smem-visitor", secret=browser_secret(SETTINGS.server.state_dir))
        ring = gr.State({})
        with gr.Row(equal_height=True):
            gr.Markdown((ASSETS / "header.md").read_text(encoding="utf-8"))
            choose = gr.Dropdown(SET_NAMES, value=DEFAULT_SET, label="Memory set", scale=0, min_width=180)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=420):
                chatbot = gr.Chatbot(
                    label="Chat",
                    height=470,
                    buttons=["copy"],
                    elem_id="chat",
                    placeholder="Ask something the memories can help with, or pick an example below.",
                )
                with gr.Row():
                    message = gr.Textbox(
                        show_label=False,
                        placeholder="Type a message and press Enter",
                        scale=6,
                        autofocus=True,
                        elem_id="message",
                        max_lines=6,
                    )
                    send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
                    stop = gr.Button("Stop", scale=1, min_width=80, elem_id="stop")
                status = gr.Markdown("", elem_id="status")
                set_status = gr.Markdown(
                    actions.describe(initial_pool, DEFAULT_SET), label="Memory set status", elem_id="set-status"
                )
                replay_slot = gr.Column()
                examples = gr.Dataset(
                    label="Examples",
                    components=[message],
                    samples=[[e] for e in RUNTIME.sets.examples(DEFAULT_SET)],
                    elem_id="examples",
                )
            with gr.Column(scale=4, min_width=380):
                table = _memory_table("Memories in context now", "memories")
                detail = gr.Markdown(viz.memory_detail([], None), elem_id="memory-detail")
                network = gr.Plot(
                    viz.network_figure(initial_pool), label="Hebbian network", show_label=False, elem_id="network"
                )
        with gr.Tabs():
            with gr.Tab("Context size", elem_id="tab-context"):
                context = gr.Plot(viz.context_figure([]), label="Context size", show_label=False, elem_id="context")
            with gr.Tab("Timeline and tokens", elem_id="tab-timeline"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        timeline = gr.Plot(
                            viz.timeline_figure(AnswerView()), label="Memory timeline", show_label=False, elem_id="timeline"
                        )
                    with gr.Column(scale=2):
                        token = gr.Slider(
                            0, 1, value=0, step=1, label="Token (follows the answer, then scrub)", interactive=False,
                            elem_id="token",
                        )
                        token_text = gr.Textbox(
                            label="Written by then", lines=2, max_lines=4, interactive=False, elem_id="token-text"
                        )
                        token_table = _memory_table("Memories in context at that token", "token-memories")
            with gr.Tab("Settings", elem_id="tab-settings"):
                with gr.Row():
                    knobs = [gr.Slider(**_slider(name)) for name in ("update_every_n", "max_memories", "max_new_tokens")]
                with gr.Row():
                    knobs += [
                        gr.Slider(**_slider(name))
                        for name in ("softmax_temperature", "diversity_weight", "association_weight")
                    ]
                with gr.Row():
                    knobs += [gr.Slider(**_slider(name)) for name in ("lookback_tokens", "temperature")]
                    # Offered only to a model that thinks (Qwen3) or is asked to (the packaged 1.5B).
                    knobs.append(
                        gr.Checkbox(
                            value=DEFAULTS.enable_thinking and RUNTIME.can_think,
                            label="Thinking",
                            info="Think before answering, shown apart",
                            visible=RUNTIME.can_think,
                            elem_id="knob-thinking",
                        )
                    )
                with gr.Row():
                    knobs.append(
                        gr.Checkbox(
                            value=DEFAULTS.sample_memories,
                            label="Sample memories",
                            info="Draw from the softmax (off: always the top scores)",
                        )
                    )
                    knobs.append(gr.Radio(**_radio("swap")))
                # The streaming-query variants the answer benchmark tried; none beat the defaults on F1.
                with gr.Row():
                    knobs.append(gr.Radio(**_radio("retrieval_trigger")))
                    knobs += [gr.Slider(**_slider(name)) for name in ("uncertainty_threshold", "lookahead_tokens")]
                    knobs.append(
                        gr.Dropdown(
                            list(actions.EXTRA_MEMORY_CHOICES),
                            value=DEFAULTS.extra_memories,
                            label="Anchored extra memories",
                            info="Keep the memories the answer starts with; re-retrievals fill this many more slots (auto: the engine's choice, 2; 0: re-retrievals replace them)",
                        )
                    )
            with gr.Tab("Memory set", elem_id="tab-set"):
                with gr.Row():
                    upload = gr.UploadButton(
                        "Upload JSON or learned state", file_types=[".json", ".npz"], type="filepath", elem_id="upload"
                    )
                    reset = gr.Button("Reset Hebbian state", elem_id="reset")
                    save = gr.Button("Download learned state", elem_id="save")
                learned_file = gr.File(label="Learned state (.npz)", interactive=False, visible=False)
                with gr.Row():
                    new_content = gr.Textbox(label="Add a memory", lines=2, scale=4, elem_id="new-memory")
                    new_type = gr.Dropdown(list(actions.MEMORY_TYPES), value=None, label="Type", scale=1)
                    new_intensity = gr.Slider(0, 1, value=0.5, step=0.05, label="Emotional intensity", scale=1)
                add = gr.Button("Add memory", elem_id="add-memory")
            with gr.Tab("How it works"):
                gr.Markdown((ASSETS / "how_it_works.md").read_text(encoding="utf-8"))

        blank = AnswerView()

        panels = (table, detail, context, timeline, token, token_text, token_table, view_state)
        """The panels of an answer, as event outputs. Naming them, not calling `cleared_panels`,
        keeps the Slider it builds out of the page (built in this Blocks context, it rendered as a
        stray "Slider" under the tabs)."""

        def cleared_panels() -> dict:
            """The panels of an answer, emptied: a new answer or another set must not show
            the previous one's."""
            return {
                table: [],
                detail: viz.memory_detail([], None),
                context: viz.context_figure([]),
                timeline: viz.timeline_figure(blank),
                token: gr.Slider(minimum=0, maximum=1, value=0, interactive=False),
                token_text: "",
                token_table: [],
                view_state: None,
            }

        def keep(keys: dict) -> dict:
            """The visitor's key ring, for the handlers and for their browser."""
            return {ring: keys, browser_ring: keys}

        def echo(text: str, chat: Optional[list]):
            """Show the question at once and clear the last answer's panels."""
            text = (text or "").strip()
            if not text:
                raise gr.Error("Type a message first.")
            return {
                chatbot: [*(chat or []), {"role": "user", "content": answer_view.text_block(text)}],
                message: "",
                status: AnswerView().status_line(),
                **cleared_panels(),
            }

        def respond(
            chat: list,
            pool: MemoryPool,
            label: str,
            layout: viz.NetworkLayout,
            update_every_n: float,
            max_memories: float,
            max_new_tokens: float,
            softmax_temperature: float,
            diversity_weight: float,
            association_weight: float,
            lookback_tokens: float,
            temperature: float,
            enable_thinking: bool,
            sample_memories: bool,
            swap: str,
            retrieval_trigger: str,
            uncertainty_threshold: float,
            lookahead_tokens: float,
            extra_memories: Any,
            keys: dict,
            request: gr.Request,
        ):
            """Stream the answer to the chat's last message into every panel; learn into the pool."""
            chat = list(chat or [])
            if not chat or chat[-1].get("role") != "user":
                raise gr.Error("Type a message first.")
            try:
                settings = actions.GenerationSettings(
                    update_every_n=update_every_n,
                    max_memories=max_memories,
                    max_new_tokens=max_new_tokens,
                    softmax_temperature=softmax_temperature,
                    diversity_weight=diversity_weight,
                    association_weight=association_weight,
                    lookback_tokens=lookback_tokens,
                    temperature=temperature,
                    enable_thinking=enable_thinking,
                    sample_memories=sample_memories,
                    swap=swap,
                    retrieval_trigger=retrieval_trigger,
                    uncertainty_threshold=uncertainty_threshold,
                    lookahead_tokens=lookahead_tokens,
                    extra_memories=extra_memories,
                )
            except ValueError as error:
                raise gr.Error(str(error)) from None
            question = answer_view.message_text(chat[-1]["content"]).strip()
            if not question:
                raise gr.Error("Type a message first.")
            try:
                fitted = prompt_budget.fit(RUNTIME.tokenizer, question, answer_view.model_history(chat[:-1]), LIMITS)
            except ValueError as error:
                raise gr.Error(str(error)) from None
            view = AnswerView()
            cancel = STOPS.arm(request.session_hash or "")
            waiting = RUNTIME.queue.waiting
            trimmed = (
                f" (the oldest {counted(fitted.trimmed.dropped, 'message')} left out to fit the prompt budget)"
                if fitted.trimmed is not None
                else ""
            )
            if waiting or trimmed:
                ahead = counted(waiting, "request")
                note = f"⏳ Waiting for the model ({ahead} ahead)…" if waiting else view.status_line()
                yield {status: note + trimmed}
            throttle = answer_view.Throttle()
            with RUNTIME.queue.slot():
                stream = generate(pool, question, fitted.history, settings, None if ON_SPACES else cancel)
                try:
                    for event in stream:
                        parts = throttle.push(view.apply(event))
                        if parts and not parts & Changed.DONE:  # the end is drawn once, below, with what was learned
                            yield frame(parts, view, chat, pool, layout)
                        if cancel.is_set() and ON_SPACES:
                            view.stop()
                            break
                finally:
                    # Also when Gradio closes this handler because the page went away: the
                    # model stops at once and its queue slot is freed.
                    stream.close()
                    ended = view.done.stop_reason if view.done else "page left"
                    LOG.info("answer ended (%s) after %d tokens", ended, view.tokens)
            learned = actions.apply_learned(pool, view.take_learned())
            last = max(view.generated - 1, 0)
            yield {
                **(keep(VISITORS.save(keys, label, pool, answered=True)) if learned else {}),
                **frame(Changed.DONE | Changed.MEMORIES | Changed.CONTEXT, view, chat, pool, layout),
                token: gr.Slider(minimum=0, maximum=max(last, 1), value=last, interactive=True),
                token_table: viz.memory_rows(view.rows_at(last)),
                token_text: view.excerpt_at(last),
                view_state: view,
                set_status: actions.describe(pool, label),
                layout_state: layout,
            }

        def frame(parts: Changed, view: AnswerView, chat: list, pool: MemoryPool, layout: viz.NetworkLayout) -> dict:
            """What an event changed, redrawn; the per-token panel follows the live answer."""
            out: dict = {chatbot: answer_view.chat_messages(chat, view), status: view.status_line()}
            if parts & (Changed.MEMORIES | Changed.DONE):
                live = max(view.tokens - 1, 0)
                out |= {
                    table: viz.memory_rows(view.rows()),
                    network: viz.network_figure(
                        pool, layout, view.current_ids, None if view.finished else view.together()
                    ),
                    timeline: viz.timeline_figure(view),
                    token: gr.Slider(minimum=0, maximum=max(live, 1), value=live, interactive=False),
                    token_table: viz.memory_rows(view.rows()),
                    token_text: view.live_excerpt(),
                    view_state: view,  # a click on the table explains a row of the live answer
                }
            if parts & (Changed.CONTEXT | Changed.DONE):
                out[context] = viz.context_figure(view.context, view.swap_tokens())
            return out

        def stop_answer(request: gr.Request) -> None:
            STOPS.press(request.session_hash or "")

        def leave(request: gr.Request) -> None:
            STOPS.leave(request.session_hash or "")

        def explain_memory(
            view: Optional[AnswerView], pool: MemoryPool, layout: viz.NetworkLayout, event: gr.SelectData
        ) -> dict:
            """A clicked row of the table: why that memory is in context, links and all, and
            the links that pulled it in drawn red in the network."""
            text, figure = viz.explain_click(view, (event.row_value or [None, None])[1], pool, layout)
            return {detail: text} if figure is None else {detail: text, network: figure}

        def show_token(position: float, view: Optional[AnswerView]):
            """The timeline cursor: which memories were in context at that token, and the text so far."""
            if view is None:
                return {}
            position = int(position)
            return {
                timeline: viz.timeline_figure(view, position),
                token_table: viz.memory_rows(view.rows_at(position)),
                token_text: view.excerpt_at(position),
            }

        def pool_changed(pool: MemoryPool, label: str, layout: viz.NetworkLayout, note: str = "") -> dict:
            return {
                pool_state: pool,
                label_state: label,
                layout_state: layout,
                set_status: actions.describe(pool, label) + (f"\n\n{note}" if note else ""),
                network: viz.network_figure(pool, layout),
            }

        def switched(pool: MemoryPool, label: str, layout: Optional[viz.NetworkLayout], stash: dict) -> dict:
            """A set taken up: its own network and status, an empty chat and answer panels."""
            return {
                **pool_changed(pool, label, layout or viz.NetworkLayout()),
                **cleared_panels(),
                stash_state: stash,
                chatbot: [],
                status: "",
                examples: gr.Dataset(samples=[[example] for example in RUNTIME.sets.examples(label)]),
            }

        def choose_set(name: str, pool: MemoryPool, label: str, layout: viz.NetworkLayout, stash: dict, keys: dict):
            if name == label:  # e.g. the dropdown set by `restore_visitor`
                return {label_state: gr.skip()}
            pool, layout = actions.switch_set(stash, RUNTIME.sets, label, pool, layout, name)
            return {**switched(pool, name, layout, stash), **keep(VISITORS.opened(keys, name))}

        def restore_visitor(keys: dict):
            """A returning visitor's sets as they left them (their browser keeps the ids)."""
            restored = VISITORS.restore(keys)
            if restored is None:
                return {ring: gr.skip()}
            out = switched(restored.pool, restored.label, None, restored.stash)
            out[set_status] += "\n\n" + restored.note
            if restored.label in SET_NAMES:
                out[choose] = restored.label
            return {**out, **keep(restored.ring.as_json())}

        def refused(error: MemoryFileError, what: str) -> dict:
            note = f"❌ {what}: {error}"
            gr.Warning(note)
            return {set_status: html.escape(note)}

        def upload_set(
            path: Optional[str], pool: MemoryPool, label: str, layout: viz.NetworkLayout, stash: dict, keys: dict
        ):
            try:
                uploaded = actions.upload(RUNTIME.sets, actions.take_upload(path), LIMITS)
            except MemoryFileError as error:
                return refused(error, "That file was not loaded, your memories are unchanged")
            stash[label] = (pool, layout)
            return {
                **switched(uploaded, UPLOADED, None, stash),
                **keep(VISITORS.save(keys, UPLOADED, uploaded)),
                set_status: actions.describe(uploaded, UPLOADED) + "\n\n✅ Loaded your file (visible only to you).",
            }

        def add_memory(
            content: str, kind: Optional[str], intensity: float, pool: MemoryPool, label: str, layout, keys: dict
        ):
            try:
                updated = actions.add_memory(pool, content, kind, intensity, LIMITS)
            except MemoryFileError as error:
                return refused(error, "Memory not added")
            return {**pool_changed(updated, label, layout, "✅ Memory added."), **keep(VISITORS.save(keys, label, updated))}

        def reset_learning(pool: MemoryPool, label: str, layout: viz.NetworkLayout, keys: dict):
            updated = actions.reset_learning(pool)
            return {
                **pool_changed(updated, label, layout, "↺ Hebbian state reset."),
                **keep(VISITORS.save(keys, label, updated)),
            }

        def save_learned(pool: MemoryPool, label: str):
            return {learned_file: gr.File(value=str(actions.save_learned(pool, label)), visible=True)}

        if EXAMPLE_RUN.exists():
            record = recorded.load(EXAMPLE_RUN)

            def replay_example(text: str) -> dict:
                """The recorded answer, all panels at once (cached after the first click)."""
                pool = RUNTIME.sets.pool(record["memory_set"])
                view = recorded.replay(record, pool)
                return {
                    chatbot: answer_view.chat_messages(
                        [{"role": "user", "content": answer_view.text_block(record["message"])}], view
                    ),
                    table: viz.memory_rows(view.rows()),
                    network: viz.network_figure(pool, viz.NetworkLayout(), view.current_ids, view.together()),
                    context: viz.context_figure(view.context, view.swap_tokens()),
                    timeline: viz.timeline_figure(view),
                    status: f"▶ A recorded answer by {record['model']} ({record['settings'].get('swap', 'auto')} swaps),"
                    f" replayed · {view.status_line()}",
                }

            with replay_slot:
                gr.Examples(
                    [[record["message"]]],
                    inputs=[message],
                    outputs=[chatbot, table, network, context, timeline, status],
                    fn=replay_example,
                    cache_examples=True,
                    cache_mode="lazy",
                    label=f"A recorded answer ({record['memory_set']} set), replayed at once",
                    example_labels=[f"▶ {record['message'][:90]}…"],
                    elem_id="recorded",
                    api_visibility="private",
                )

        answer_inputs = [chatbot, pool_state, label_state, layout_state, *knobs, ring]
        answer_outputs = [
            chatbot, table, network, context, timeline, token, token_text, token_table, status, view_state,
            set_status, layout_state, ring, browser_ring,
        ]  # fmt: skip
        echo_outputs = [
            chatbot, message, status, table, detail, context, timeline, token, token_text, token_table, view_state,
        ]  # fmt: skip
        gr.on(
            [send.click, message.submit], echo, [message, chatbot], echo_outputs, queue=False,
            api_visibility="undocumented",
        ).success(
            respond, answer_inputs, answer_outputs, api_name="answer", api_visibility="undocumented",
            concurrency_limit=1,
        )  # fmt: skip
        stop.click(stop_answer, None, None, queue=False, api_visibility="undocumented")
        table.select(
            explain_memory, [view_state, pool_state, layout_state], [detail, network], queue=False,
            api_visibility="private",
        )  # fmt: skip
        demo.unload(leave)
        token.release(
            show_token, [token, view_state], [timeline, token_table, token_text], api_name="timeline",
            api_visibility="undocumented",
        )  # fmt: skip
        examples.click(lambda sample: sample[0], examples, message, api_visibility="private")

        set_inputs = [pool_state, label_state, layout_state, stash_state, ring]
        set_outputs = [
            pool_state, label_state, layout_state, stash_state, set_status, network, chatbot, status, examples, ring,
            browser_ring, *panels,
        ]  # fmt: skip
        choose.change(choose_set, [choose, *set_inputs], set_outputs, api_name="choose_set", api_visibility="undocumented")
        demo.load(restore_visitor, browser_ring, [*set_outputs, choose], api_visibility="private")
        upload.upload(upload_set, [upload, *set_inputs], set_outputs, api_name="upload_set", api_visibility="undocumented")
        pool_outputs = [pool_state, label_state, layout_state, set_status, network, ring, browser_ring]
        add.click(
            add_memory, [new_content, new_type, new_intensity, pool_state, label_state, layout_state, ring], pool_outputs,
            api_name="add_visitor_memory", api_visibility="undocumented",
        )  # fmt: skip
        reset.click(
            reset_learning, [pool_state, label_state, layout_state, ring], pool_outputs, api_name="reset_learning",
            api_visibility="undocumented",
        )  # fmt: skip
        save.click(
            save_learned, [pool_state, label_state], learned_file, api_name="save_learned", api_visibility="undocumented"
        )
        for tool in agent_tools.tools(RUNTIME, generate, DEFAULT_SET, lambda: LIMITS):
            gr.api(tool, api_name=tool.__name__)
    return demo


UPLOADED = "uploaded set"


def _memory_table(label: str, elem_id: str) -> gr.Dataframe:
    return gr.Dataframe(
        headers=viz.MEMORY_HEADERS,
        datatype=["str", "str", "str", "number", "number", "str"],
        label=label,
        interactive=False,
        wrap=True,
        elem_id=elem_id,
        max_height=260,
        column_widths=["12%", "31%", "13%", "11%", "11%", "22%"],
    )


def _slider(name: str) -> dict[str, Any]:
    spec = actions.SETTINGS[name]
    return {
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        "value": getattr(DEFAULTS, name),
        "step": spec.step,
        "label": spec.label,
        "info": spec.info or None,
        "elem_id": f"knob-{name.replace('_', '-')}",
    }


def _radio(name: str) -> dict[str, Any]:
    spec = actions.CHOICES[name]
    return {
        "choices": list(spec.choices),
        "value": getattr(DEFAULTS, name),
        "label": spec.label,
        "info": spec.info,
        "elem_id": f"knob-{name.replace('_', '-')}",
    }


demo = build_demo()
# Widget sizes in build_demo (heights, widths, scales, label lengths) were chosen by eye, like
# the figures' (smem.ui.viz); none is measured and none changes an answer.
THEME = gr.themes.Soft(primary_hue="indigo")
CSS = "#memories td { vertical-align: top; } footer { display: none !important; }"


def main() -> None:
    logging.getLogger("smem").info("settings: %s", json.dumps(SETTINGS.as_log()))
    if SETTINGS.model.read_ahead and not ON_GPU:
        RUNTIME.start_read_ahead()  # the shipped sets' memory lines, while the page loads
    host, port = SETTINGS.server.host, SETTINGS.server.port
    # 4 UI events at once (chosen): answers serialise in the runtime's queue anyway; this only
    # lets table edits, uploads and figure redraws of other visitors proceed beside them.
    demo.queue(default_concurrency_limit=4)
    # The UI's look, its MCP server and the upload limit, the same whether it launches (Space)
    # or is mounted on the API (locally).
    ui_options: dict[str, Any] = {
        "theme": THEME,
        "css": CSS,
        "ssr_mode": False,
        "mcp_server": True,
        "max_file_size": LIMITS.max_upload_bytes,
    }
    if ON_SPACES:
        # ZeroGPU runs its start-up (packing the CUDA weights for its workers) inside
        # Blocks.launch, so a Space must launch; the API joins the app Gradio serves, behind
        # Gradio's own routes (whose own OpenAPI pages are turned off so the API's show).
        api = create_api(RUNTIME, LIMITS, generate=generate_for_api)

        @contextlib.asynccontextmanager
        async def mount_api(app: Any) -> AsyncIterator[None]:
            # Lifespan start-up runs before uvicorn opens its socket, so no request can see
            # Gradio's routes without the API's (mounting after launch left a 404 window).
            app.mount("/", api)
            yield

        demo.launch(
            server_name=host,
            server_port=port,
            **ui_options,
            app_kwargs={"docs_url": None, "redoc_url": None, "openapi_url": None, "lifespan": mount_api},
        )
        return
    import uvicorn

    app = gr.mount_gradio_app(create_api(RUNTIME, LIMITS), demo, path="/", **ui_options)
    # Every path the API does not serve reaches the UI's app; its 404s take the API's shape.
    ui = next(route.app for route in app.routes if isinstance(route, Mount))
    ui.add_exception_handler(StarletteHTTPException, not_found)
    # Streaming connections never finish by themselves; do not let them hold a restart for long
    # (3 s, chosen: a stopped answer's last event is out well within it).
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
