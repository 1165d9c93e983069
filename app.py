"""Streaming Memory — the Gradio Space: a chat whose memories change while it answers.

This file only wires widgets to `smem`: per-visitor actions live in `smem.ui.actions`, the event
stream's reduction into view state in `smem.ui.answer_view`, figures and table rows in
`smem.ui.viz`. The HTTP API (`smem.serving.api`) is served by the same process.

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
from typing import Any, AsyncIterator, Iterator, Optional  # noqa: E402

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from smem.generation import models  # noqa: E402
from smem.ui import actions, answer_view, viz  # noqa: E402
from smem.serving.api import create_api  # noqa: E402
from smem.generation.events import Event  # noqa: E402
from smem.memory.records import MemoryFileError  # noqa: E402
from smem.memory.pool import MemoryPool  # noqa: E402
from smem.serving import prompt_budget  # noqa: E402
from smem.serving.runtime import Runtime  # noqa: E402
from smem.serving.api_schema import ApiSettings  # noqa: E402
from smem.serving.settings import Settings  # noqa: E402
from smem.ui.answer_view import AnswerView, Changed  # noqa: E402


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

ON_SPACES = bool(os.environ.get("SPACE_ID"))
ON_GPU = torch.cuda.is_available()

# Loaded at import (ZeroGPU packs module-level CUDA tensors at launch); read onto the CPU
# first and then moved, the pattern ZeroGPU supports, in the dtype the GPU wants.
RUNTIME = Runtime.load(
    models.resolve_model_id(None, "cuda" if ON_GPU else "cpu"),
    device="cpu",
    dtype=models.choose_dtype("cuda") if ON_GPU else None,
)
if ON_GPU:
    RUNTIME.model.to("cuda")

LIMITS = ApiSettings.from_env()
"""The same limits for the UI and the HTTP API (`main` replaces them with the CLI's, if given)."""
SET_NAMES = RUNTIME.sets.names
DEFAULT_SET = "tutor" if "tutor" in SET_NAMES else SET_NAMES[0]
# Qwen3 with thinking is sampled at 0.6 (its card's advice); the 0.5B CPU fallback wanders off
# topic when sampled hotter, so it runs cooler and shorter.
DEFAULTS = actions.GenerationSettings(max_new_tokens=1024 if ON_GPU else 256, temperature=0.6 if ON_GPU else 0.3)


@spaces.GPU(duration=actions.gpu_seconds)
def generate(
    pool: MemoryPool, message: str, history: list[dict[str, str]], settings: actions.GenerationSettings
) -> Iterator[Event]:
    """The answer, as engine events. On ZeroGPU this runs in a forked worker: `pool` arrives
    pickled and what it learns leaves in the final `Done` event."""
    yield from actions.answer(RUNTIME.engine(pool), message, history, settings)


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


HEADER = """
# 🧠 Streaming Memory
A Hebbian memory for LLMs: while the model writes, the last tokens are re-embedded every few
tokens and the memories in its context are **swapped on the fly**, without re-reading the
conversation. Memories used together grow links, and those links shape the next retrieval.
"""

HOW_IT_WORKS = """
1. **Retrieve.** Your message (and the last exchange) is embedded and scored against every
   memory: similarity, boosted by recency, emotional weight, how often and for which kinds of
   question a memory was useful before, and its links to memories already picked. A softmax
   over the scores (*softmax temperature*) with a diversity penalty draws up to *max
   memories*; within one answer the draws share their dice, so the set changes only when the
   scores do.
2. **Generate and re-retrieve.** Every *N* tokens the last *lookback* tokens of the answer
   become the query. If the best set changed, the memory block — which sits late in the
   prompt — is swapped. *Exact* swaps (the default on a GPU) cut the KV cache back to just
   before the block and re-read the new block plus the answer so far. *Slot* swaps (the
   default on a CPU) keep the block as fixed slots and re-read only the changed memory's slot,
   so a swap costs the same at token 1,000 as at token 10; the timeline marks them dotted.
   The conversation before the block is never re-read.
3. **Learn.** When the answer ends, every memory that was in context is counted once, and each
   pair that shared the context is linked, more strongly the longer they stayed together.
   The network on the right shows those links; the next answer's retrieval feels their pull.

The chart compares the context this takes with classic RAG, which keeps every memory it ever
retrieved, and with putting all memories in the prompt. Each visitor has a private copy of
the memory set: uploads, added memories and learning are never shared.
"""


def _frame(parts: Changed, view: AnswerView, pool: MemoryPool, chat: list, message: str) -> tuple:
    memories = bool(parts & (Changed.MEMORIES | Changed.DONE))
    return (
        answer_view.chat_messages(chat, message, view),
        viz.memory_rows(view.rows()) if memories else gr.skip(),
        viz.network_figure(pool, view.current_ids, None if view.finished else view.together())
        if memories
        else gr.skip(),
        viz.context_figure(view.context, view.swap_tokens()) if parts & (Changed.CONTEXT | Changed.DONE) else gr.skip(),
        viz.timeline_figure(view) if memories else gr.skip(),
    )


def respond(
    message: str,
    chat: Optional[list],
    pool: MemoryPool,
    label: str,
    update_every_n: float,
    max_memories: float,
    softmax_temperature: float,
    diversity_weight: float,
    association_weight: float,
    lookback_tokens: float,
    temperature: float,
    max_new_tokens: float,
    enable_thinking: bool,
    sample_memories: bool,
    swap: str,
):
    """Stream one answer into the chat, table, network and charts; learn into the visitor's pool."""
    message = (message or "").strip()
    chat = list(chat or [])
    if not message:
        raise gr.Error("Type a message first.")
    try:
        settings = actions.GenerationSettings(
            update_every_n=update_every_n,
            max_memories=max_memories,
            softmax_temperature=softmax_temperature,
            diversity_weight=diversity_weight,
            association_weight=association_weight,
            lookback_tokens=lookback_tokens,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            enable_thinking=enable_thinking,
            sample_memories=sample_memories,
            swap=swap,
        )
        fitted = prompt_budget.fit(RUNTIME.tokenizer, message, answer_view.model_history(chat), LIMITS)
    except ValueError as error:
        raise gr.Error(str(error)) from None
    view = AnswerView()
    waiting = RUNTIME.queue.waiting
    note = f"⏳ Waiting for the model ({waiting} request(s) ahead)…" if waiting else "🔎 Retrieving memories…"
    if fitted.trimmed is not None:
        note += f" (the oldest {fitted.trimmed.dropped} messages were left out to fit the prompt budget)"
    idle = gr.skip()
    yield (
        answer_view.chat_messages(chat, message, view),
        idle,
        idle,
        idle,
        idle,
        "",
        gr.Slider(interactive=False),
        note,
        *[idle] * 4,
    )
    throttle = answer_view.Throttle()
    with RUNTIME.queue.slot():
        for event in generate(pool, message, fitted.history, settings):
            parts = throttle.push(view.apply(event))
            if parts:
                yield (*_frame(parts, view, pool, chat, message), *[idle] * 7)
    actions.apply_learned(pool, view.take_learned())
    last = max(view.generated - 1, 0)
    yield (
        *_frame(Changed.DONE | Changed.MEMORIES | Changed.CONTEXT, view, pool, chat, message),
        idle,
        gr.Slider(minimum=0, maximum=max(last, 1), value=last, interactive=True),
        answer_view.summary(view.done) if view.done else "",
        view,
        actions.describe(pool, label),
        viz.memory_rows(view.rows_at(last)),
        view.excerpt_at(last),
    )


def show_token(token: float, view: Optional[AnswerView]):
    """The timeline cursor: which memories were in context at that token, and the text so far."""
    if view is None:
        return gr.skip(), gr.skip(), gr.skip()
    token = int(token)
    return viz.timeline_figure(view, token), viz.memory_rows(view.rows_at(token)), view.excerpt_at(token)


def _pool_changed(pool: MemoryPool, label: str, note: str = ""):
    return (
        pool,
        label,
        actions.describe(pool, label) + (f"\n\n{note}" if note else ""),
        viz.network_figure(pool),
        [],
        gr.Dataset(samples=[[example] for example in RUNTIME.sets.examples(label)]),
    )


def choose_set(name: str):
    return _pool_changed(RUNTIME.sets.pool(name), name)


def _refused(error: MemoryFileError, what: str):
    message = f"❌ {what}: {error}"
    gr.Warning(message)
    return gr.skip(), gr.skip(), html.escape(message), gr.skip(), gr.skip(), gr.skip()


def upload_set(raw: Optional[bytes]):
    try:
        uploaded = actions.upload(RUNTIME.sets, raw, LIMITS)
    except MemoryFileError as error:
        return _refused(error, "That file was not loaded, your memories are unchanged")
    return _pool_changed(uploaded, "uploaded set", "✅ Loaded your file (visible only to you).")


def add_memory(content: str, memory_type: Optional[str], intensity: float, pool: MemoryPool, label: str):
    try:
        updated = actions.add_memory(pool, content, memory_type, intensity, LIMITS)
    except MemoryFileError as error:
        return _refused(error, "Memory not added")
    return _pool_changed(updated, label, "✅ Memory added.")


def reset_learning(pool: MemoryPool, label: str):
    return _pool_changed(actions.reset_learning(pool), label, "↺ Hebbian state reset.")


def save_learned(pool: MemoryPool, label: str) -> str:
    return str(actions.save_learned(pool, label))


def build_demo() -> gr.Blocks:
    initial_pool = RUNTIME.sets.pool(DEFAULT_SET)
    with gr.Blocks(title="Streaming Memory", fill_width=True) as demo:
        # Each visitor gets a deep copy; dropped when the page closes, or after a few idle
        # hours for API clients that never disconnect.
        pool_state = gr.State(initial_pool, time_to_live=4 * 3600)
        label_state = gr.State(DEFAULT_SET)
        view_state = gr.State(None)
        gr.Markdown(HEADER)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=420):
                chatbot = gr.Chatbot(
                    label="Chat",
                    height=540,
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
                examples = gr.Dataset(
                    label="Examples",
                    components=[message],
                    samples=[[e] for e in RUNTIME.sets.examples(DEFAULT_SET)],
                    elem_id="examples",
                )
                status = gr.Markdown(label="Status", elem_id="status")
                with gr.Row():
                    knobs = [gr.Slider(**_slider("update_every_n")), gr.Slider(**_slider("max_memories"))]
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        knobs += [
                            gr.Slider(**_slider(name))
                            for name in ("softmax_temperature", "diversity_weight", "association_weight")
                        ]
                    with gr.Row():
                        knobs += [
                            gr.Slider(**_slider(name)) for name in ("lookback_tokens", "temperature", "max_new_tokens")
                        ]
                    knobs.append(gr.Checkbox(value=DEFAULTS.enable_thinking, label="Thinking (Qwen3)"))
                    with gr.Row():
                        knobs.append(
                            gr.Checkbox(
                                value=DEFAULTS.sample_memories,
                                label="Sample memories",
                                info="Draw from the softmax (off: always the top scores)",
                            )
                        )
                        knobs.append(
                            gr.Radio(
                                list(actions.SWAP_CHOICES),
                                value=DEFAULTS.swap,
                                label="Memory swap",
                                info="exact: re-read the context; slots: rewrite only the changed memory; auto: exact on GPU",
                            )
                        )
            with gr.Column(scale=4, min_width=380):
                table = _memory_table("Memories in context now", "memories")
                network = gr.Plot(
                    viz.network_figure(initial_pool), label="Hebbian network", show_label=False, elem_id="network"
                )
        with gr.Row(equal_height=False):
            with gr.Column():
                context = gr.Plot(viz.context_figure([]), label="Context size", show_label=False, elem_id="context")
            with gr.Column():
                timeline = gr.Plot(
                    viz.timeline_figure(AnswerView()), label="Memory timeline", show_label=False, elem_id="timeline"
                )
                token = gr.Slider(
                    0, 1, value=0, step=1, label="Token (after the answer ends)", interactive=False, elem_id="token"
                )
                token_text = gr.Textbox(label="Written by then", lines=2, max_lines=4, interactive=False)
                token_table = _memory_table("Memories in context at that token", "token-memories")
        with gr.Accordion("Memory set", open=True):
            with gr.Row():
                choose = gr.Dropdown(SET_NAMES, value=DEFAULT_SET, label="Memory set", scale=2)
                upload = gr.UploadButton("Upload JSON or state", file_types=[".json", ".npz"], type="binary", scale=1, elem_id="upload")
                reset = gr.Button("Reset Hebbian state", scale=1)
                save = gr.Button("Download learned state", scale=1)
            set_status = gr.Markdown(
                actions.describe(initial_pool, DEFAULT_SET), label="Memory set status", elem_id="set-status"
            )
            learned_file = gr.File(label="Learned state (.npz)", interactive=False, visible=False)
            with gr.Accordion("Add a memory", open=False):
                with gr.Row():
                    new_content = gr.Textbox(label="Content", lines=2, scale=4, elem_id="new-memory")
                    new_type = gr.Dropdown(list(actions.MEMORY_TYPES), value=None, label="Type", scale=1)
                    new_intensity = gr.Slider(0, 1, value=0.5, step=0.05, label="Emotional intensity", scale=1)
                add = gr.Button("Add memory", elem_id="add-memory")
        with gr.Accordion("How it works", open=False):
            gr.Markdown(HOW_IT_WORKS)

        chat_inputs = [message, chatbot, pool_state, label_state, *knobs]
        chat_outputs = [
            chatbot,
            table,
            network,
            context,
            timeline,
            message,
            token,
            status,
            view_state,
            set_status,
            token_table,
            token_text,
        ]
        sent = send.click(respond, chat_inputs, chat_outputs, api_name="chat", concurrency_limit=1)
        submitted = message.submit(respond, chat_inputs, chat_outputs, api_name=False, concurrency_limit=1)
        stop.click(None, cancels=[sent, submitted])
        token.release(show_token, [token, view_state], [timeline, token_table, token_text], api_name="timeline")
        examples.click(lambda sample: sample[0], examples, message, api_name=False)

        set_outputs = [pool_state, label_state, set_status, network, table, examples]
        choose.change(choose_set, choose, set_outputs, api_name="choose_set")
        upload.upload(upload_set, upload, set_outputs, api_name="upload_set")
        add.click(
            add_memory,
            [new_content, new_type, new_intensity, pool_state, label_state],
            set_outputs,
            api_name="add_memory",
        )
        reset.click(reset_learning, [pool_state, label_state], set_outputs, api_name="reset_learning")
        save.click(save_learned, [pool_state, label_state], learned_file, api_name="save_learned").then(
            lambda: gr.File(visible=True), None, learned_file, api_name=False
        )
    return demo


def _memory_table(label: str, elem_id: str) -> gr.Dataframe:
    return gr.Dataframe(
        headers=viz.MEMORY_HEADERS,
        datatype=["str", "str", "str", "number", "number"],
        label=label,
        interactive=False,
        wrap=True,
        elem_id=elem_id,
        column_widths=["13%", "49%", "16%", "11%", "11%"],
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


demo = build_demo()
THEME = gr.themes.Soft(primary_hue="indigo")
CSS = "#memories td { vertical-align: top; } footer { display: none !important; }"


def main() -> None:
    global LIMITS
    settings = Settings.from_cli()
    LIMITS = settings.api
    logging.getLogger("smem").info("settings: %s", json.dumps(settings.as_log()))
    host, port = settings.server.host, settings.server.port
    demo.queue(default_concurrency_limit=4)
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
            theme=THEME,
            css=CSS,
            ssr_mode=False,
            max_file_size=LIMITS.max_upload_bytes,
            app_kwargs={"docs_url": None, "redoc_url": None, "openapi_url": None, "lifespan": mount_api},
        )
        return
    import uvicorn

    app = gr.mount_gradio_app(
        create_api(RUNTIME, LIMITS), demo, path="/", theme=THEME, css=CSS, ssr_mode=False, max_file_size=LIMITS.max_upload_bytes
    )
    # Streaming connections never finish by themselves; do not let them hold a restart for long.
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
