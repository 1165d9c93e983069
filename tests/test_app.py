"""The Gradio app through its API with gradio_client: streaming, per-visitor state, memory-set
actions. The app runs as a subprocess on the tiny model (`app_server` in conftest)."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from smem.memory.embedder import default_embedder
from smem.memory.pool import MemoryPool
from smem.ui.actions import GenerationSettings
from smem.generation.events import Memories, MemoryUpdate, Token
from smem.memory.records import Hit, Memory
from smem.ui import answer_view
from smem.ui.answer_view import SWAP_TITLE, AnswerView

from conftest import REPO, run_app

# The outputs of /answer, and of /choose_set and /upload_set (State outputs are not returned;
# the visitor's key ring, a BrowserState, is).
CHAT, TABLE, NETWORK, CONTEXT, TIMELINE, TOKEN, TOKEN_TEXT, TOKEN_TABLE, STATUS, SET_STATUS, RING = range(11)
SET = {name: index for index, name in enumerate(["status", "network", "chat", "answer_status", "examples", "ring", "table"])}
QUESTION = "How can I help Alex with fractions before his quiz?"


def client(server) -> Client:
    return Client(server.url, verbose=False)


def is_skip(output: Any) -> bool:
    return isinstance(output, dict) and output.get("__type__") == "update"


def chat_text(chat: list[dict], swaps: bool = True) -> str:
    """Everything the assistant wrote in the latest turn (thinking and answer), and the
    memory-swap blocks unless `swaps` is False."""
    turn = chat[max(i for i, m in enumerate(chat) if m["role"] == "user") + 1 :]
    if not swaps:
        swap = SWAP_TITLE.split("{")[0]
        turn = [m for m in turn if not ((m.get("metadata") or {}).get("title") or "").startswith(swap)]
    return "".join(block.get("text", "") for message in turn for block in message["content"])


def rows(table: dict) -> list[list]:
    return table["data"]


def figure(plot: dict) -> dict:
    assert plot["type"] == "plotly"
    return json.loads(plot["plot"])


def trace(plot: dict, name: str) -> dict:
    return next(t for t in figure(plot)["data"] if t.get("name") == name)


def downloaded(output: Any) -> str:
    """The path of a file output (the save button also makes its file box visible)."""
    return output["value"] if isinstance(output, dict) else output


def memory_file(tmp_path: Path, contents: list[str], name: str = "set.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps([{"content": c, "type": "insight"} for c in contents]))
    return path


KNOBS = (
    "update_every_n", "max_memories", "max_new_tokens", "softmax_temperature", "diversity_weight",
    "association_weight", "lookback_tokens", "temperature", "enable_thinking", "sample_memories", "swap",
    "retrieval_trigger", "uncertainty_threshold", "lookahead_tokens", "extra_memories",
)  # fmt: skip
"""/answer's inputs after the chat, in order (an undocumented endpoint takes no keywords)."""


def submit(c: Client, message: str = QUESTION, chat: Any = None, **settings: Any):
    """Send a message as the page does after echoing it: the chat, ending with the question."""
    history = [*(chat or []), {"role": "user", "content": [{"type": "text", "text": message}]}]
    values = {**dataclasses.asdict(GenerationSettings()), **settings}
    return c.submit(history, *(values[name] for name in KNOBS), api_name="/answer")


def ask(c: Client, message: str = QUESTION, chat: Any = None, **settings: Any) -> tuple[list, tuple]:
    """Send a message; return every streamed output and the final one."""
    settings = {"max_new_tokens": 60, "update_every_n": 3, **settings}
    job = submit(c, message, chat, **settings)
    frames = list(job)
    return frames, job.result()


def test_chat_streams_growing_text_with_memories_graph_and_chart(app_server):
    frames, final = ask(client(app_server), max_new_tokens=120)
    lengths = [len(chat_text(frame[CHAT])) for frame in frames]
    assert lengths == sorted(lengths), "the streamed answer never shrinks"
    assert len(set(lengths)) >= 3, f"the answer arrived in too few steps: {lengths}"
    tables = [frame[TABLE] for frame in frames if not is_skip(frame[TABLE])]
    assert tables and rows(tables[0]), "the memories in context arrive while streaming"
    statuses = {row[0] for table in tables for row in rows(table)}
    assert "🟢 added" in statuses
    graphs = [frame[NETWORK] for frame in frames if not is_skip(frame[NETWORK])]
    assert graphs and trace(graphs[0], "in context now")["x"], "the network highlights the memories in context"
    assert len(graphs) < len(frames), "the network is not re-sent on every token"
    streaming = trace(final[CONTEXT], "streaming memory")
    assert streaming["x"][-1] >= 100
    assert "done" in final[STATUS] and "tokens" in final[STATUS] and "memory swap" in final[STATUS]
    assert final[TOKEN]["maximum"] >= 100 and final[TOKEN]["interactive"] is True
    assert rows(final[TOKEN_TABLE]) and final[TOKEN_TEXT]


def test_the_chat_gives_the_model_back_its_answer_word_for_word():
    """The chat component is the next turn's history: an answer shown in pieces around its
    swap blocks must come back from the browser exactly as the model wrote it."""
    import gradio as gr

    hits = [
        Hit(Memory(i, f"memory {i}", None, None, 0.5, datetime.now(timezone.utc), 3), 0.5, 0.5, 1.0, 0) for i in "ab"
    ]
    view = AnswerView()
    view.apply(Memories(hits[:1]))
    view.apply(Token("1. Stay calm and motivated"))
    view.apply(MemoryUpdate(memories=hits[1:], added=hits[1:], removed=hits[:1], at_token=5))
    view.apply(Token(" throughout:\n   - sketch it\n   - underline the question"))
    question = {"role": "user", "content": answer_view.text_block("Why does this fail?\n    x = 1\n    y = x +")}
    chatbot = gr.Chatbot()
    sent = chatbot.postprocess(answer_view.chat_messages([question], view)).model_dump()
    returned = chatbot.preprocess(chatbot.data_model.model_validate(sent))
    asked, answered = answer_view.model_history(returned)
    assert asked["content"] == question["content"]["text"], "the question keeps its indented code"
    assert answered["content"] == view.answer, "no glued words at the swap, no lost indents"


def test_a_history_over_the_prompt_budget_is_trimmed_and_the_status_says_how_much(app_server):
    long_turn = "word " * 5_000  # over the 4,096-token prompt budget on its own
    history = [
        {"role": "user", "content": [{"type": "text", "text": long_turn}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Noted."}]},
        {"role": "user", "content": [{"type": "text", "text": "And now?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Still here."}]},
    ]
    frames, final = ask(client(app_server), chat=history)
    notes = [frame[STATUS] for frame in frames if isinstance(frame[STATUS], str)]
    assert any("the oldest 2 messages left out to fit the prompt budget" in note for note in notes), notes[:3]
    assert "tokens in" in final[STATUS], "the answer still runs on the history that fits"


def test_learning_persists_across_turns_and_downloads(app_server, tmp_path):
    c = client(app_server)
    _, first = ask(c)
    assert re.search(r"\*\*tutor\*\* · 151 memories · [1-9]\d* learned links?", first[SET_STATUS])
    links_after_first = int(re.search(r"(\d+) learned links?", first[SET_STATUS]).group(1))
    assert first[RING]["current"] == "tutor" and first[RING]["sessions"]["tutor"], "the answer's learning is stored"
    sizes = [
        size
        for t in figure(first[NETWORK])["data"]
        if t.get("name") != "in context now" and isinstance(t.get("marker", {}).get("size"), list)
        for size in t["marker"]["size"]
    ]
    unlinked = trace(first[NETWORK], next(t["name"] for t in figure(first[NETWORK])["data"] if t.get("name", "").startswith("unlinked")))
    assert min(sizes) > unlinked["marker"]["size"], "retrieved memories are drawn large, the unlinked ones faint"

    _, second = ask(c, "And what about his reading?", chat=first[CHAT])
    assert [m["role"] for m in second[CHAT]][:2] == ["user", "assistant"], "the second turn keeps the first"
    assert int(re.search(r"(\d+) learned links?", second[SET_STATUS]).group(1)) >= links_after_first

    saved = downloaded(c.predict(api_name="/save_learned"))
    pool = MemoryPool.load(saved, default_embedder())
    assert len(pool) == 151 and len(pool.links()) >= links_after_first

    status = c.predict(handle_file(saved), api_name="/upload_set")[SET["status"]]
    restored = int(re.search(r"(\d+) learned links?", status).group(1))
    assert "Loaded your file" in status and restored == len(pool.links()), "the download uploads back, links and all"

    status, network, _ = c.predict(api_name="/reset_learning")
    assert "· 0 learned links · 0 answers learned from" in status
    assert not any(t["mode"] == "lines" for t in figure(network)["data"]), "no links are left"


def test_timeline_shows_the_memories_of_any_token(app_server):
    c = client(app_server)
    _, final = ask(c, max_new_tokens=80)
    plot, table, text = c.predict(1, api_name="/timeline")
    assert rows(table), "some memories were in context at token 1"
    assert len(text) <= len(final[TOKEN_TEXT]) + 1
    cursor = figure(plot)["layout"]["shapes"]
    assert cursor and cursor[0]["x0"] == 1


def test_two_concurrent_visitors_are_isolated(app_server, tmp_path):
    mine, theirs = client(app_server), client(app_server)
    private = memory_file(tmp_path, [f"ZEBRAQUOKKA private note {i}" for i in range(3)])
    status = mine.predict(handle_file(str(private)), api_name="/upload_set")[SET["status"]]
    assert "3 memories" in status

    results: dict[str, tuple] = {}

    def run(name: str, visitor: Client) -> None:
        results[name] = ask(visitor, max_new_tokens=40)[1]

    threads = [threading.Thread(target=run, args=item) for item in (("mine", mine), ("theirs", theirs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert set(results) == {"mine", "theirs"}
    assert all("ZEBRAQUOKKA" in row[1] for row in rows(results["mine"][TABLE]))
    assert not any("ZEBRAQUOKKA" in row[1] for row in rows(results["theirs"][TABLE]))
    assert "ZEBRAQUOKKA" not in results["theirs"][NETWORK]["plot"]
    assert "**tutor** · 151 memories" in results["theirs"][SET_STATUS]

    newcomer = MemoryPool.load(downloaded(client(app_server).predict(api_name="/save_learned")), default_embedder())
    assert len(newcomer) == 151 and newcomer.links() == [], "a new visitor starts fresh: learning is never shared"


def test_choosing_a_set_swaps_pool_and_example_prompts(app_server):
    c = client(app_server)
    outputs = c.predict("family", api_name="/choose_set")
    status, network, table, examples = (outputs[SET[name]] for name in ("status", "network", "table", "examples"))
    assert status.startswith("**family** · ") and "0 learned links" in status
    assert rows(table) == [] and len(figure(network)["data"]) >= 2
    expected = (REPO / "memories" / "family.examples.txt").read_text(encoding="utf-8").split("\n")[0].strip()
    assert examples["samples"][0] == [expected]
    _, final = ask(c, "What should I pack for Maya's sleepover?", max_new_tokens=16)
    assert "**family**" in final[SET_STATUS]


def test_bad_upload_names_record_and_field_and_keeps_the_pool(app_server, tmp_path):
    c = client(app_server)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"content": "fine"}, {"type": "insight"}]))
    outputs = c.predict(handle_file(str(bad)), api_name="/upload_set")
    status, network, table = (outputs[SET[name]] for name in ("status", "network", "table"))
    assert "record 2" in status and "content" in status and "unchanged" in status
    assert is_skip(network) and is_skip(table)
    _, final = ask(c, max_new_tokens=20)
    assert "**tutor** · 151 memories" in final[SET_STATUS]

    not_json = tmp_path / "notes.json"
    not_json.write_bytes(b"\xff\xfe not json")
    status = c.predict(handle_file(str(not_json)), api_name="/upload_set")[SET["status"]]
    assert "UTF-8" in status or "JSON" in status


def test_add_memory_is_validated(app_server):
    c = client(app_server)
    status, _, _ = c.predict("   ", "insight", 0.5, api_name="/add_visitor_memory")
    assert "content" in status and "Memory not added" in status
    status, network, ring = c.predict("Alex <b>loves</b> chess puzzles", "insight", 0.7, api_name="/add_visitor_memory")
    assert "152 memories" in status and ring["sessions"]["tutor"], "the added memory is stored"
    hovers = [text for t in figure(network)["data"] for text in t.get("hovertext") or []]
    assert any("Alex &lt;b&gt;loves&lt;/b&gt; chess puzzles" in text for text in hovers), "shown escaped"
    assert not any("<b>loves" in text for text in hovers)


def test_out_of_range_settings_and_empty_messages_are_refused(app_server):
    with pytest.raises(AppError, match="less than minimum value 1"):
        ask(client(app_server), update_every_n=0)
    with pytest.raises(AppError, match="greater than maximum value 15"):
        ask(client(app_server), max_memories=16)
    with pytest.raises(AppError, match="greater than maximum value 64"):
        ask(client(app_server), lookahead_tokens=65)
    with pytest.raises(AppError, match="not in the list of choices"):
        ask(client(app_server), extra_memories=11)
    with pytest.raises(AppError, match="not in the list of choices"):
        ask(client(app_server), retrieval_trigger="entropy")
    with pytest.raises(AppError, match="message"):
        ask(client(app_server), message="   ")


def test_stream_coalesces_frames_of_a_long_answer(app_server):
    """Redraws are throttled, so a model writing hundreds of tokens a second does not send
    hundreds of frames; the final frame still holds the whole answer."""
    frames, final = ask(client(app_server), max_new_tokens=600, update_every_n=2)
    tokens = int(re.search(r"(\d+) tokens in", final[STATUS]).group(1))
    assert len(frames) < tokens, "frames are coalesced, not one per token"
    # Answer text only: a swap's block waits for its sentence to end (`_sentence_end`), so
    # in a later frame text may come before a block that ended an earlier frame.
    answer, earlier = chat_text(final[CHAT], swaps=False), chat_text(frames[-2][CHAT], swaps=False)
    assert answer.startswith(earlier), "no text is lost by coalescing"


def test_stop_releases_the_model(app_server):
    c = client(app_server)
    job = submit(c, max_new_tokens=2048, update_every_n=1)
    for frame in job:
        if len(chat_text(frame[CHAT])) > 20:
            break
    job.cancel()
    # The queue empties once the cancelled answer lets go (60 s only guards a hang; the
    # uncancelled answer would run 2048 tokens with a retrieval after each).
    deadline = time.monotonic() + 60
    while get_json(app_server.url + "/health")["queue"]["length"]:
        assert time.monotonic() < deadline, "the cancelled answer kept the model"
        time.sleep(0.1)
    frames, final = ask(c, max_new_tokens=16)
    assert "Waiting for the model" not in frames[0][STATUS]
    assert "tokens" in final[STATUS]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.load(response)


def stream_api(url: str) -> list[str]:
    body = json.dumps({"message": "hi", "memory_set": "tutor", "max_new_tokens": 4}).encode()
    request = urllib.request.Request(url + "/chat/stream", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return [
            json.loads(line[6:])["type"] for line in response.read().decode().splitlines() if line.startswith("data: ")
        ]


def test_one_process_serves_the_ui_and_the_http_api(app_server):
    health = get_json(app_server.url + "/health")
    assert health["status"] == "ok" and health["model"] == "tiny", "the model by name, not a cache path"
    for method, path, status in (("GET", "/chat/stream", 405), ("POST", "/health", 405), ("GET", "/nope", 404)):
        request = urllib.request.Request(app_server.url + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == status and json.load(refused.value)["error"]["status"] == status, path
    assert get_json(app_server.url + "/openapi.json")["info"]["title"] == "Streaming Memory API"
    assert stream_api(app_server.url)[-1] == "done"


def test_every_slider_on_the_page_is_one_the_layout_placed(app_server):
    """Building the app adds no stray widget: a Slider made while the event wiring is declared
    (an update built at build time) rendered as a bare "Slider" under the tabs."""
    sliders = [c["props"] for c in get_json(app_server.url + "/config")["components"] if c["type"] == "slider"]
    assert all(props.get("label") for props in sliders), [p for p in sliders if not p.get("label")]
    assert len(sliders) == 12  # the token scrubber, 10 settings, the new memory's intensity


def test_app_waits_for_the_model_while_the_api_streams(app_server):
    """The chat and the HTTP API share one generation queue: the model never runs twice at once."""
    body = json.dumps({"message": "hi", "memory_set": "tutor", "max_new_tokens": 2048, "update_every_n": 1}).encode()
    request = urllib.request.Request(app_server.url + "/chat/stream", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as api_stream:
        while b'"type":"token"' not in api_stream.readline():
            pass
        job = submit(client(app_server), max_new_tokens=16)
        first = next(iter(job))
        assert "Waiting for the model" in first[STATUS]
    final = job.result(timeout=60)
    assert "tokens" in final[STATUS]


def test_spaces_mode_launches_gradio_and_serves_the_api(tmp_path):
    """On a Space (SPACE_ID set) the app uses demo.launch(), which ZeroGPU needs, with the
    HTTP API mounted on the app Gradio serves."""
    with run_app(tmp_path, SPACE_ID="local/streaming-memory") as server:
        assert get_json(server.url + "/health")["status"] == "ok"
        assert get_json(server.url + "/openapi.json")["info"]["title"] == "Streaming Memory API"
        assert stream_api(server.url)[-1] == "done"
        _, final = ask(client(server), max_new_tokens=16)
        assert "tokens" in final[STATUS]


@pytest.mark.slow
def test_packaged_default_model_answers(tmp_path):
    with run_app(tmp_path, timeout_s=300, SMEM_MODEL="") as server:
        _, final = ask(client(server), "Say hello to Alex in one short sentence.", max_new_tokens=16)
    assert chat_text(final[CHAT]).strip()
    assert "tokens" in final[STATUS]
