"""The answer benchmark: LoCoMo's scoring rules, the question sample, the degenerate-answer
detector, the JSON contract, and that labels never reach the pool or the prompt."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import answers
from conftest import TEST_DEVICE, build_tiny
from smem.generation.degenerate import degenerate
from smem.generation.engine import StreamingEngine
from smem.generation.events import DoneStats, Done, Memories, MemoryUpdate, Thinking, Token
from smem.generation.reasoning import PromptedReasoning

GOLD = "Zanzibar marmalade"
"""A gold answer whose words occur nowhere in the dialog, so any trace of it is a leak."""


# The in-process tiny model, on the test device (conftest.TEST_DEVICE).
TINY = ("--model", "tiny", "--device", TEST_DEVICE)


def locomo_file(path: Path, conversations: int = 2, questions: int = 3) -> Path:
    samples = []
    for c in range(conversations):
        turns = [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a grey cat called Pixel last week."},
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Nice! I started pottery classes on Tuesdays."},
            {"speaker": "Ana", "dia_id": "D1:3", "text": "My sister visits in June.", "blip_caption": "a photo of a beach"},
        ]
        qa = [
            {"question": f"What did Ana adopt? ({c}.{q})", "answer": GOLD, "evidence": ["D1:1"], "category": 1 + q % 4}
            for q in range(questions)
        ]
        qa.append({"question": "Adversarial?", "adversarial_answer": "x", "evidence": [], "category": 5})
        qa.append({"question": "No evidence?", "answer": "y", "evidence": ["D9:9"], "category": 4})
        samples.append(
            {
                "sample_id": f"conv-{c}",
                "conversation": {
                    "speaker_a": "Ana",
                    "speaker_b": "Ben",
                    "session_1_date_time": "1:56 pm on 8 May, 2023",
                    "session_1": turns,
                },
                "qa": qa,
            }
        )
    path.write_text(json.dumps(samples))
    return path


# -- LoCoMo scoring ------------------------------------------------------------------------


def test_normalisation_follows_locomo():
    # commas, case, punctuation and the four dropped words (a, an, the, and), then Porter stems
    assert answers.normalize_answer("The Cats, and a Dog's toys!") == ["cat", "dog", "toy"]


@pytest.mark.parametrize(
    ("prediction", "gold", "category", "expected"),
    [
        ("7 May 2023", "7 May 2023", 2, 1.0),
        ("On 7 May 2023", "7 May 2023", 2, 2 * 0.75 * 1.0 / 1.75),
        ("running", "runs", 4, 1.0),
        ("nothing relevant", "pottery", 4, 0.0),
        # multi-hop: gold parts each take their best prediction part, averaged
        ("pottery, painting", "painting, pottery, camping", 1, 2 / 3),
        ("pottery painting", "painting, pottery", 1, 2 / 3),
    ],
)
def test_f1_rules(prediction, gold, category, expected):
    assert answers.locomo_f1(prediction, gold, category) == pytest.approx(expected)


def test_open_domain_gold_is_cut_at_its_first_semicolon(tmp_path):
    path = locomo_file(tmp_path / "d.json", conversations=1, questions=0)
    data = json.loads(path.read_text())
    data[0]["qa"].append({"question": "q", "answer": "likely yes; she said so", "evidence": ["D1:1"], "category": 3})
    path.write_text(json.dumps(data))
    conv = answers.load(path)[0]
    assert answers.question_at(conv, 0).answer == "likely yes"


# -- sampling and intervals ----------------------------------------------------------------


def test_sample_spreads_evenly_and_is_seeded(tmp_path):
    conversations = answers.load(locomo_file(tmp_path / "d.json", conversations=3, questions=4))
    picks = answers.sample_questions(conversations, 7, seed=1)
    per_conv = [sum(1 for c, _ in picks if c == i) for i in range(3)]
    assert sorted(per_conv) == [2, 2, 3]
    assert len(set(picks)) == 7 and picks == sorted(picks)
    assert picks == answers.sample_questions(conversations, 7, seed=1)
    assert {tuple(answers.sample_questions(conversations, 7, seed=s)) for s in range(6)} != {tuple(picks)}
    assert len(answers.sample_questions(conversations, 100, seed=0)) == 12  # capped at what exists


def test_bootstrap_interval_brackets_the_mean():
    values = [0.0, 1.0] * 20
    low, high = answers.bootstrap_ci(values, seed=0)
    assert low < 0.5 < high and high - low < 0.5
    assert answers.bootstrap_ci([0.3] * 5, seed=0) == [0.3, 0.3]


# -- degenerate answers --------------------------------------------------------------------

HEADING = "Memories relevant to this conversation (they update as you answer; use them where they help):"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (HEADING + "\n- Maya is allergic to peanuts.", "copied"),
        ("Sure! memories relevant to this conversation (they update as you answer", "copied"),
        ("I'm sorry, but I can't help with that either. I'm sorry, but I can't help with that either.", "sentence"),
        ("Maya has been eating peanut butter for a long time and loves it and Maya has been eating peanut "
         "butter for a long time and loves it", "span"),
        ("no " * 30, "span"),
    ],
)
def test_degenerate_answers_are_flagged(answer, reason):
    verdict = degenerate(answer, [HEADING])
    assert verdict
    assert any(r.startswith({"copied": "copied", "sentence": "repeated sentence", "span": "repeated span"}[reason])
               for r in verdict.reasons)


@pytest.mark.parametrize(
    "answer",
    [
        "Caroline went to the LGBTQ support group on 7 May 2023.",
        "Alex panics on timed quizzes. Start with two warm-up problems, then practise under a soft timer. "
        "Praise effort, not speed. Use pizza fractions he already knows.",
        "Yes. Yes.",  # too short to be a loop
        "The memories say she likes pottery.",  # shares a word or two with the heading, copies nothing
    ],
)
def test_ordinary_answers_are_not_flagged(answer):
    assert not degenerate(answer, [HEADING])


# -- the reasoning mode: final answer after the marker, evidence taken there -----------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Facts: Ana adopted a cat called Pixel.\nAnswer: Pixel", ("Ana adopted a cat called Pixel.", "Pixel", True)),
        ("**Facts:**\n1. She moved.\n**Answer:** Sweden", ("1. She moved.", "Sweden", True)),
        ("Facts: she moved. Final answer: Sweden", ("she moved. Final", "Sweden", True)),
        ("Sweden, I think", ("", "Sweden, I think", False)),  # no marker: the whole text is the answer
    ],
)
def test_split_reasoning(text, expected):
    assert answers.split_reasoning(text) == expected


def test_reasoning_final_answer_f1_ignores_the_facts():
    record: dict = {}
    question = answers.Question("What did Ana adopt?", ["D1:1"], 4, "a cat")
    answer = answers.Answer("Facts: Ana adopted a cat called Pixel last week.\nAnswer: a cat", {"D1:1"}, {"D1:1"},
                            100.0, 1.0, 1.0, 20, 0, 1)
    answers.score(record, question, answer, [], reasoning=True)
    assert record["f1"] == 1.0 and record["final_answer"] == "a cat"
    assert record["reasoning_words"] == 8 and record["answer_words"] == 2 and not record["marker_missing"]
    answers.score(record, question, answer, [], reasoning=False)
    assert record["f1"] < 0.5 and record["reasoning_words"] == 0


def test_reasoning_degenerate_check_reads_facts_and_answer_apart():
    question = answers.Question("Where did John go in December?", ["D1:1"], 4, "the Rocky Mountains")
    fact = "John took a trip to the Rocky Mountains in December 2023 with his whole family."
    record: dict = {}
    restated = answers.Answer(f"Facts: {fact}\nAnswer: {fact}", set(), set(), 0.0, 1.0, 1.0, 40, 0, 1)
    answers.score(record, question, restated, [], reasoning=True)
    assert record["degenerate"] == []  # an answer may restate its own facts
    looping = answers.Answer(f"Facts: {fact} {fact}\nAnswer: the Rocky Mountains", set(), set(), 0.0, 1.0, 1.0, 60, 0, 1)
    answers.score(record, question, looping, [], reasoning=True)
    assert record["degenerate"]  # a loop inside the facts is a loop


class ScriptedEngine:
    """Replays a fixed event stream: the memories change while the facts are written, and
    again just before the final answer's first token. A token written "~text" is thinking
    (a `Thinking` event, as Qwen3's `<think>` block and the engine's prompted facts stream)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens

    def stream(self, message, **options):
        a, b, c = (SimpleNamespace(id=i) for i in ("a", "b", "c"))
        yield Memories([a])
        for index, text in enumerate(self.tokens):
            if index == 2:
                yield MemoryUpdate([b], [b], [a], at_token=2)
            if text == "<swap>":
                yield MemoryUpdate([c], [c], [b], at_token=index)
                continue
            yield Thinking(text[1:]) if text.startswith("~") else Token(text)
        yield Done(DoneStats(len(self.tokens), 0, 2, 3, "eos", 0.0, 0.0, 0.0, 0.0, 0.0))


@pytest.mark.parametrize(
    ("tokens", "reasoning", "at_answer", "text"),
    [
        # the engine's prompted reasoning: the facts stream as thinking, the answer after the marker
        (["~Facts:", "~ Ana", "~ adopted", "<swap>", "a", " cat"], True, {"c"}, "Facts: Ana adopted\nAnswer: a cat"),
        (["~Facts:", "~ Ana", "~ adopted", "a", "<swap>", " cat"], True, {"b"}, "Facts: Ana adopted\nAnswer: a cat"),
        (["~Facts:", "<swap>", "~ Ana", "~ adopted"], True, {"a"}, "Facts: Ana adopted"),  # never came: first token
        (["A", " cat", "\nAnswer", ":", "<swap>", " cat"], False, {"a"}, "A cat\nAnswer: cat"),  # no reasoning: first token
        # a thinking model (Qwen3 on the GPU path): swaps while it thinks; the answer starts after
        (["~Ana", "~ adopted", "<swap>", "~ a cat", " A", " cat"], False, {"c"}, "A cat"),
    ],
)
def test_evidence_at_answer_is_taken_at_the_final_answers_first_token(tokens, reasoning, at_answer, text):
    answer = answers.ask(ScriptedEngine(tokens), "q", None, reasoning)
    assert answer.at_answer == at_answer and answer.text == text
    assert answer.ever == ({"a", "b", "c"} if "<swap>" in tokens else {"a", "b"})


# -- labels stay out of the pool and the prompt; the JSON contract -----------------------------


@pytest.fixture(scope="module")
def tiny_model():
    return build_tiny(seed=0)


def test_labels_never_reach_the_pool_or_the_prompt(tmp_path, tiny_model, minilm):
    model, tokenizer = tiny_model
    conv = answers.load(locomo_file(tmp_path / "d.json", conversations=1, questions=2))[0]
    pool = answers.build_pool(conv, minilm, minilm.encode(conv.texts))
    seen: list[list[int]] = []
    # Hook the embedding layer: every token the model reads passes it, whichever path (prefill,
    # decode step, slot rewrite) fed it.
    handle = model.get_input_embeddings().register_forward_pre_hook(lambda m, a: seen.append(a[0].flatten().tolist()))
    try:
        # Exact swaps: the slot layout trims a memory line to its slot (40 tokens), which cuts the
        # tiny tokenizer's long encodings before the word this test looks for.
        engine = StreamingEngine(model, tokenizer, pool, swap="exact", swap_budget=None, reasoning=None)
        reasoning = StreamingEngine(model, tokenizer, pool, swap="exact", swap_budget=None,
                                    reasoning=PromptedReasoning(answers.REASONING_INSTRUCTION))
        for index in range(len(conv.questions)):
            question = answers.question_at(conv, index)
            for every in (0, 1):
                answers.ask(engine, answers.question_message(question), conv.now, update_every_n=every,
                            max_memories=2, max_new_tokens=6, temperature=0.0)
                # --reasoning: its own message, the format request in the system prompt
                answers.ask(reasoning, answers.question_message(question, reasoning=True), conv.now, True,
                            update_every_n=every, max_memories=2, max_new_tokens=6, temperature=0.0)
    finally:
        handle.remove()
    read = tokenizer.decode([i for ids in seen for i in ids]).lower()
    stored = " ".join(m.content for m in pool.memories).lower()
    assert "pixel" in read  # the hook saw memories at all
    assert answers.REASONING_INSTRUCTION.lower() in read  # ... and the reasoning mode's prompt
    for label in ("zanzibar", "marmalade", "d1:1", "evidence", *answers.CATEGORIES.values()):
        assert label not in read and label not in stored


def test_force_answer_needs_reasoning(tmp_path):
    with pytest.raises(SystemExit):
        answers.main(["--data", str(locomo_file(tmp_path / "d.json")), *TINY, "--force-answer"])


def test_cli_writes_the_contracted_json(tmp_path, minilm):
    out = tmp_path / "out.json"
    result = answers.main(
        ["--data", str(locomo_file(tmp_path / "d.json")), "--questions", "2", "--seed", "0", "--json", str(out),
         *TINY, "--max-new-tokens", "4", "--all"]
    )
    written = json.loads(out.read_text())
    assert written["model"] and written["settings"]["questions"] == 2
    assert set(written["conditions"]) == {"none", "rag", "stream", "stream_n1", "rag_wide", "all"}
    for condition in written["conditions"].values():
        assert {"f1", "f1_ci", "evidence_at_answer", "evidence_any", "context_tokens", "seconds_per_answer",
                "degenerate_rate", "per_category"} <= set(condition)
        assert condition["n"] == 2 and set(condition["per_category"]) == set(answers.CATEGORIES.values())
    none, rag = written["conditions"]["none"], written["conditions"]["rag"]
    assert none["context_tokens"] == 0 and none["evidence_any"] == 0
    assert rag["evidence_at_answer"] == 1.0  # three turns, k=5: every turn is in context
    assert written["conditions"]["all"]["context_tokens"] == pytest.approx(rag["context_tokens"])
    assert result["conditions"].keys() == written["conditions"].keys()


def test_cli_n1_conditions_wide_from_n1_and_splice_against_the_reference(tmp_path, minilm):
    out = tmp_path / "out.json"
    answers.main(
        ["--data", str(locomo_file(tmp_path / "d.json")), "--questions", "2", "--seed", "0", "--json", str(out),
         *TINY, "--max-new-tokens", "4", "--conditions", "rag", "stream_n1", "stream_n1_splice",
         "rag_wide_n1", "--splice-margin", "0.5"]
    )
    written = json.loads(out.read_text())
    assert set(written["conditions"]) == {"rag", "stream_n1", "stream_n1_splice", "rag_wide_n1"}
    ratio = written["conditions"]["stream_n1"]["context_tokens"] / written["conditions"]["rag_wide_n1"]["context_tokens"]
    assert written["stream_n1_context_vs_rag_wide_n1"] == pytest.approx(ratio, abs=1e-3)
    assert {f"stream_n1_splice - stream_n1, {m}" for m in ("f1", "evidence_any", "evidence_at_answer")} <= set(
        written["paired"]
    )
    for row, stream_row in zip(written["answers"]["rag_wide_n1"], written["answers"]["stream_n1"]):
        assert row["k"] == max(stream_row["distinct_memories"], answers.RAG_K)
    assert all(row["swap_mode"] == "splice" for row in written["answers"]["stream_n1_splice"])
    with pytest.raises(SystemExit, match="stream_n1"):
        answers.conditions(["rag", "rag_wide_n1"], 10)


def test_cli_draws_memories_as_the_app_does_when_asked(tmp_path, minilm, monkeypatch):
    """`--sample-memories` reaches every answer's `stream` call (and the run's settings); without
    it the benchmark draws by argmax, as the engine's library default does."""
    asked: list[dict] = []
    real_ask = answers.ask
    monkeypatch.setattr(answers, "ask", lambda *args, **kwargs: asked.append(kwargs) or real_ask(*args, **kwargs))
    for flag in ([], ["--sample-memories"]):
        out = tmp_path / f"out{len(flag)}.json"
        answers.main(
            ["--data", str(locomo_file(tmp_path / "d.json")), "--questions", "2", "--seed", "0", "--json", str(out),
             *TINY, "--max-new-tokens", "4", "--conditions", "rag", "stream", *flag]
        )
        assert json.loads(out.read_text())["settings"].get("sample_memories", False) is bool(flag)
    assert [call.get("sample_memories", False) for call in asked] == [False] * 4 + [True] * 4


@pytest.mark.parametrize("force", [False, True])
def test_cli_reasoning_mode(tmp_path, minilm, force):
    out = tmp_path / "out.json"
    answers.main(
        ["--data", str(locomo_file(tmp_path / "d.json")), "--questions", "2", "--seed", "0", "--json", str(out),
         *TINY, "--max-new-tokens", "6", "--reasoning", "--conditions", "rag", "stream"]
        + (["--force-answer"] if force else [])
    )
    written = json.loads(out.read_text())
    assert written["settings"]["reasoning"] == answers.REASONING_INSTRUCTION
    assert written["settings"]["force_answer"] is force
    assert set(written["paired"]) == {f"stream - rag, {m}" for m in ("f1", "evidence_any", "evidence_at_answer")}
    for name, condition in written["conditions"].items():
        assert {"reasoning_words", "answer_words", "marker_missing_rate", "f1_ci"} <= set(condition)
        for record in written["answers"][name]:
            facts, final, marked = answers.split_reasoning(record["answer"])
            assert record["final_answer"] == final and record["marker_missing"] is not marked
            assert record["f1"] == pytest.approx(answers.locomo_f1(final, record["gold"], record["category"]), abs=1e-4)
            assert "Facts" not in record["question"]


def test_only_asks_the_same_sampled_questions(tmp_path, minilm):
    data = locomo_file(tmp_path / "d.json", conversations=2, questions=3)
    common = ["--data", str(data), "--questions", "4", "--seed", "0", *TINY, "--max-new-tokens", "2",
              "--conditions", "rag"]
    full = answers.main(common)["answers"]["rag"]
    part = answers.main([*common, "--only", "conv-1"])["answers"]["rag"]
    assert part and {r["conversation"] for r in part} == {"conv-1"}
    assert [r["question"] for r in part] == [r["question"] for r in full if r["conversation"] == "conv-1"]
