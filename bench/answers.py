"""LoCoMo question answering through the streaming engine: do the right memories reach the answer?

Each conversation's dialog turns are a memory pool (as in bench/locomo.py); each sampled question
of categories 1-4 is asked as a chat message, with LoCoMo's short-answer instruction. Conditions,
on the same model, questions and decoding:

  none       no memories
  rag        retrieve once, k=5 (update_every_n=0)
  stream     k=5 at a time, re-retrieved every N tokens (the engine's default N)
  stream_n1  the same, N=1
  stream_n1_splice  N=1 with splice swaps (the CPU default), against the reference's swaps
             (--swap); --splice-margin sets its incumbent margin
  rag_wide   retrieve once, k = the distinct memories `stream` had in context for that question
  rag_wide_n1  the same, k from `stream_n1` (RAG with as many memories as N=1 streaming saw)
  all        every memory (only with --all, and only where it fits the model's context)
  flare      k=5, re-retrieved when a token's probability falls under a threshold, from the
             question and the sentence being written (FLARE's trigger and query)
  lookahead  k=5, retrieve once, but from the question + an unseen draft of the answer's first
             sentence (FLARE's look-ahead, --lookahead-tokens); the answer starts after it
  stream_lookahead  the look-ahead, then `stream` (N of --update-every-n)
  stream_n1_lookahead  the look-ahead, then N=1 streaming
  stream_anchored  `stream`, anchored: the 5 memories the answer starts with stay, and each
             re-retrieval fills up to --extra-memories more slots (the engine's extra_memories)
  stream_n1_anchored  the same with N=1
  rag_wide_anchored, rag_wide_n1_anchored  retrieve once, k = the distinct memories of the
             anchored stream (RAG with as many memories)

Metrics (per condition and per category, mean with a 95% bootstrap interval over questions):
  f1                  LoCoMo's answer F1 (task_eval/evaluation.py: its normalisation, Porter
                      stemming, per-category rules)
  evidence_at_answer  share of the question's evidence turns in context when the first answer
                      token (after any thinking) is written
  evidence_any        the same, at any point of the answer
  context_tokens      memory tokens in context, averaged over the answer's tokens
  seconds_per_answer  engine time from request to the last token (wall clock)
  cpu_seconds_per_answer  CPU time of this process over the answer (all its threads): on a
                      shared machine wall time stretches with the load, CPU time much less
  degenerate_rate     answers that copy the prompt's fixed text or loop (smem.generation.degenerate)
  answer_words        answer length

--reasoning gives every condition the same request to write "Facts:" with one to three short
sentences first, then "Answer:" and the short answer (a prompted reasoning phase for models
that do not think, so a re-retrieval has text to act on). F1 is then scored on the text after
the answer marker only, evidence_at_answer is taken at the first token of that final answer,
and reasoning_words / answer_words / marker_missing_rate report the two parts' lengths and how
often the marker never came (those answers are scored on their whole text). It is the engine's
own prompted reasoning (`smem.generation.reasoning`) with LoCoMo's format request in place of
the app's. With --force-answer, a reply that would end before its "Answer:" line writes
"\nAnswer:" instead and goes on (`AnswerBeforeEnd`), the same for every condition.

Labels (answers, evidence, categories) are used for scoring only: the pool gets the turns' text
and dates, the engine gets the question.

    python bench/answers.py --data ../shared/data/locomo-dev.json --questions 60 --seed 0 --json out.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # the repo (smem) and bench/ (its sibling modules), also when imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
from locomo import CATEGORIES, Conversation, build_pool, load  # noqa: E402
from nltk.stem import PorterStemmer  # noqa: E402
from runlog import print_run_config  # noqa: E402
from smem.generation.degenerate import degenerate  # noqa: E402
from smem.generation.engine import ANCHORED_EXTRA_MEMORIES, StreamingEngine  # noqa: E402
from smem.generation.events import ContextStats, Done, Memories, MemoryUpdate, Thinking, Token  # noqa: E402
from smem.generation.line_store import LineStore  # noqa: E402
from smem.generation.swap import READ_AHEAD_RUN_LINES  # noqa: E402
from smem.generation.prompt import FIXED_TEXTS, PromptBuilder  # noqa: E402
from smem.generation.reasoning import ANSWER_MARKER, FORCED_MARKER, PromptedReasoning  # noqa: E402

RAG_K = 5
"""k for `rag` and `stream` (the issue's protocol; also the engine's default max_memories)."""

DEFAULT_UPDATE_EVERY_N: int = inspect.signature(StreamingEngine.stream).parameters["update_every_n"].default
"""`stream` runs at whatever N the engine ships with."""

SHORT_ANSWER = (
    "Answer in the form of a short phrase, with exact words from the conversation whenever possible."
)
"""LoCoMo's QA instruction (task_eval/evaluate_gpts.py QA_PROMPT), reworded for a chat message:
its F1 rewards short answers, so every condition gets the same request for one."""

TEMPORAL_HINT = "Use the dates of the conversation to answer with an approximate date."
"""LoCoMo appends this to category-2 (temporal) questions (evaluate_gpts.py)."""

REASONING_INSTRUCTION = (
    'First write "Facts:" and, on the same line, one to three short sentences with the facts from the '
    'conversation that answer the question. Then, on a new line, write "Answer:" and the answer as a short '
    "phrase, with exact words from the conversation whenever possible."
)
"""--reasoning: the format request, the same for every condition, appended to the system prompt
(by the engine's `PromptedReasoning`) in place of SHORT_ANSWER in the message. Tried on the packaged 0.5B,
greedy, with k=5 memories, on dev questions: this wording gave "Facts:" ... "Answer:" in 5 of 5
(19-68 tokens before the answer). Without "on the same line" / "on a new line" it often wrote
numbered lists of 4-7 facts that ran into the 128-token cap before "Answer:"; asking for "one or
two facts, on one line" dropped the "Answer:" line in 2 of 5. With SHORT_ANSWER still in the
message it listed 5-7 facts. The system prompt keeps the instruction out of the first retrieval's
query, which embeds the message. Plain labels with a colon, not headings (a small model parrots
headings); "Facts", not "Notes": the memory block's instruction calls its lines notes and tells the
model not to repeat them."""

_FACTS_LABEL = re.compile(r"^[*_\s]*facts?[*_]*\s*:[*_]*", re.IGNORECASE)

LOOKAHEAD_TOKENS = 32
"""Longest look-ahead draft: FLARE drafts the next sentence; a LoCoMo answer here is ~14 words
(~20 tokens), so 32 holds one. The draft stops at the first sentence end anyway."""
ANSWER_MAX_NEW_TOKENS = 64
"""LoCoMo asks for a short phrase (its runs allow 32 tokens); 64 leaves room for a sentence."""
REASONING_MAX_NEW_TOKENS = 128
"""--reasoning: the packaged 0.5B's facts and answer took 32-71 tokens on the 5 probe questions
of `REASONING_INSTRUCTION`; 128 leaves room for three sentences and the answer."""

BOOTSTRAP_SAMPLES = 2000
"""Resamples for the 95% intervals; with 60 questions the interval ends move < 0.005 past ~1000."""

# -- LoCoMo's scoring (task_eval/evaluation.py, re-implemented from its rules) ---------------------

_ARTICLES = {"a", "an", "the", "and"}
"""LoCoMo's normalize_answer drops these four words (its remove_articles includes "and")."""
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_STEM = PorterStemmer().stem  # NLTK's default (NLTK_EXTENSIONS) mode, as LoCoMo instantiates it


def normalize_answer(text: str) -> list[str]:
    """LoCoMo's normalisation: drop commas, lower-case, drop ASCII punctuation, drop a/an/the/and,
    split on whitespace; then Porter-stem each word as its F1 does."""
    text = text.replace(",", "").lower().translate(_PUNCTUATION)
    return [_STEM(word) for word in text.split() if word not in _ARTICLES]


def token_f1(prediction: str, truth: str) -> float:
    """Bag-of-stems F1 between one prediction and one gold answer (LoCoMo's f1_score)."""
    pred, gold = normalize_answer(prediction), normalize_answer(truth)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def locomo_f1(prediction: str, truth: str, category: int) -> float:
    """Category 1 (multi-hop) answers are lists: both sides split on commas, each gold part takes
    its best prediction part, averaged. Categories 2-4 use plain token F1. (Category 3's gold is
    already cut at its first ';' by bench.locomo.load.)"""
    if category == 1:
        predictions = [p.strip() for p in prediction.split(",")]
        truths = [t.strip() for t in truth.split(",")]
        return float(np.mean([max(token_f1(p, t) for p in predictions) for t in truths]))
    return token_f1(prediction, truth)


# -- sampling and statistics -----------------------------------------------------------------


def sample_questions(conversations: Sequence[Conversation], n: int, seed: int) -> list[tuple[int, int]]:
    """`n` (conversation index, question index) pairs spread evenly over the conversations:
    quotas are dealt one at a time in a seeded order, so they differ by at most one (a
    conversation out of questions drops out), then each conversation's questions are drawn with
    `seed`. Returned in file order."""
    rng = np.random.default_rng(seed)
    sizes = [len(c.questions) for c in conversations]
    quota = [0] * len(conversations)
    order = rng.permutation(len(conversations))
    remaining = min(n, sum(sizes))
    while remaining:
        for index in order:
            if remaining and quota[index] < sizes[index]:
                quota[index] += 1
                remaining -= 1
    picks = []
    for index, size in enumerate(quota):
        chosen = np.sort(rng.choice(sizes[index], size=size, replace=False))
        picks.extend((index, int(q)) for q in chosen)
    return picks


def bootstrap_ci(values: Sequence[float], seed: int, samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """95% percentile interval of the mean over questions resampled with replacement."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


# -- one answer ------------------------------------------------------------------------------


class Question(NamedTuple):
    """One sampled question with its labels; only `text` and `category` shape the message."""

    text: str
    evidence: list[str]
    category: int
    answer: str


def question_at(conv: Conversation, index: int) -> Question:
    text, evidence, category = conv.questions[index]
    return Question(text, evidence, category, conv.answers[index])


def question_message(question: Question, reasoning: bool = False) -> str:
    """The chat message: the question and LoCoMo's instructions (with --reasoning, the format
    request is in the system prompt, from the engine's `PromptedReasoning`, instead of SHORT_ANSWER);
    nothing else of the label."""
    parts = [question.text]
    if question.category == 2:
        parts.append(TEMPORAL_HINT)
    if not reasoning:
        parts.append(SHORT_ANSWER)
    return " ".join(parts)


def split_reasoning(text: str) -> tuple[str, str, bool]:
    """(reasoning, final answer, whether the answer marker was found). Without the marker the
    whole text is the answer: a model that skipped the facts still answered, and one cut off
    while listing facts is scored on what it wrote."""
    match = ANSWER_MARKER.search(text)
    if match is None:
        return "", text.strip(), False
    return _FACTS_LABEL.sub("", text[: match.start()].strip()).strip(), text[match.end() :].strip(), True


@dataclass
class Answer:
    text: str
    at_answer: set[str]
    ever: set[str]
    context_tokens: float
    seconds: float
    cpu_seconds: float
    tokens: int
    swaps: int
    retrievals: int
    reasoning_tokens: int = 0
    """Tokens written before the final answer began: the facts and the marker (the engine's
    thinking tokens; --reasoning, when an answer came; 0 otherwise)."""
    extra: dict[str, Any] = field(default_factory=dict)


def ask(engine: StreamingEngine, message: str, now: Any, reasoning: bool = False, **options: Any) -> Answer:
    """Run one answer and record which memories were in context when, and for how long.

    The memories "at answer" are those in context when the first answer token is written: the
    first token after any thinking (a thinking model's, or with `reasoning` the facts before the
    engine's answer marker), else the first token written. A `MemoryUpdate` is yielded before
    the token decoded under it, so `current` is the context that token was written in. With
    `reasoning` the two parts are joined again as "Facts: ...\nAnswer: ..." (whitespace around the
    marker may differ from the model's) for `split_reasoning` to score; a thinking model's
    thinking is left out."""
    current: set[str] = set()
    ever: set[str] = set()
    at_first: Optional[set[str]] = None
    at_answer: Optional[set[str]] = None
    thinking: list[str] = []
    text: list[str] = []
    steps: list[tuple[int, int]] = []  # (generated tokens, memory tokens) at each context change
    done: Optional[Done] = None
    cpu_start = time.process_time()
    for event in engine.stream(message, history=None, learn=False, now=now, **options):
        if isinstance(event, (Memories, MemoryUpdate)):
            current = {hit.id for hit in event.memories}
            ever |= current
        elif isinstance(event, (Thinking, Token)):
            if at_first is None:
                at_first = set(current)
            if isinstance(event, Thinking):
                thinking.append(event.text)
            else:
                if at_answer is None:
                    at_answer = set(current)
                text.append(event.text)
        elif isinstance(event, ContextStats):
            steps.append((event.generated_tokens, event.memory_tokens))
        elif isinstance(event, Done):
            done = event
    assert done is not None
    total = done.stats.tokens
    mean_tokens = float(steps[-1][1]) if steps else 0.0
    if total > 0 and steps:
        # piecewise constant over the answer's tokens: each reading holds until the next one
        marks = np.array([s[0] for s in steps] + [total], dtype=float)
        sizes = np.array([s[1] for s in steps], dtype=float)
        spans = np.clip(np.diff(marks), 0, None)
        mean_tokens = float((spans * sizes).sum() / spans.sum()) if spans.sum() > 0 else float(sizes[-1])
    reasoning_tokens = done.stats.thinking_tokens if reasoning and at_answer is not None else 0
    if at_answer is None:  # the marker never came, or nothing was written
        at_answer = at_first if at_first is not None else set(current)
    answer = "".join(text).strip()
    if reasoning:
        facts = "".join(thinking).strip()
        answer = f"{facts}{FORCED_MARKER} {answer}" if text else facts
    return Answer(
        text=answer,
        at_answer=at_answer,
        ever=ever,
        context_tokens=mean_tokens,
        seconds=done.stats.total_s,
        cpu_seconds=time.process_time() - cpu_start,
        tokens=total,
        swaps=done.stats.swaps,
        retrievals=done.stats.retrievals,
        reasoning_tokens=reasoning_tokens,
        extra={
            "thinking_tokens": done.stats.thinking_tokens,
            "stop": done.stats.stop_reason,
            "swap_mode": done.stats.extra.get("swap_mode", "exact"),
        },
    )


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    name: str
    update_every_n: int
    max_memories: Optional[int]
    """None: decided per question (rag_wide from stream, all from the pool's size)."""
    options: tuple[tuple[str, Any], ...] = ()


PAIRED = (
    *((streaming, "rag") for streaming in ("stream", "stream_n1", "stream_n1_splice", "flare", "lookahead",
                                            "stream_lookahead", "stream_n1_lookahead", "stream_anchored",
                                            "stream_n1_anchored")),
    ("stream_anchored", "stream"),  # what anchoring adds to streaming
    ("stream_n1_anchored", "stream_n1"),
    ("stream_anchored", "rag_wide_anchored"),  # against RAG with as many memories
    ("stream_n1_anchored", "rag_wide_n1_anchored"),
    ("stream_n1_splice", "stream_n1"),  # fast swaps against the reference
    ("stream_lookahead", "stream"),  # what the look-ahead adds to streaming
    ("stream_n1_lookahead", "stream_n1"),
)
"""The (a, b) conditions whose per-question differences a - b the report gives, where both ran."""

WIDE_FROM = {
    "rag_wide": "stream",
    "rag_wide_n1": "stream_n1",
    "rag_wide_anchored": "stream_anchored",
    "rag_wide_n1_anchored": "stream_n1_anchored",
}
"""Each retrieve-once-wide condition and the streaming condition whose distinct memories set its k."""


def conditions(
    names: Sequence[str],
    stream_every: int,
    threshold: Optional[float] = None,
    splice_margin: Optional[float] = None,
    lookahead: int = LOOKAHEAD_TOKENS,
    extra: int = ANCHORED_EXTRA_MEMORIES,
) -> list[Condition]:
    known = {
        "none": Condition("none", 0, 0),
        "rag": Condition("rag", 0, RAG_K),
        "stream": Condition("stream", stream_every, RAG_K),
        "stream_n1": Condition("stream_n1", 1, RAG_K),
        # N=1 with splice swaps (the CPU default) whatever --swap says, so one run compares them
        # with the reference; --splice-margin makes its incumbents stickier (issue 12: fewer swaps)
        "stream_n1_splice": Condition(
            "stream_n1_splice",
            1,
            RAG_K,
            (("swap", "splice"),) + ((("incumbent_margin", splice_margin),) if splice_margin is not None else ()),
        ),
        "rag_wide": Condition("rag_wide", 0, None),
        "rag_wide_n1": Condition("rag_wide_n1", 0, None),
        "all": Condition("all", 0, None),
        # FLARE-style: re-retrieve when a token's probability is low (at most once per token),
        # querying with the sentence being written
        "flare": Condition(
            "flare",
            1,
            RAG_K,
            (("retrieval_trigger", "uncertainty"),) + ((("uncertainty_threshold", threshold),) if threshold else ()),
        ),
        "lookahead": Condition("lookahead", 0, RAG_K, (("lookahead_tokens", lookahead),)),
        "stream_lookahead": Condition("stream_lookahead", stream_every, RAG_K, (("lookahead_tokens", lookahead),)),
        "stream_n1_lookahead": Condition("stream_n1_lookahead", 1, RAG_K, (("lookahead_tokens", lookahead),)),
        "stream_anchored": Condition("stream_anchored", stream_every, RAG_K, (("extra_memories", extra),)),
        "stream_n1_anchored": Condition("stream_n1_anchored", 1, RAG_K, (("extra_memories", extra),)),
        "rag_wide_anchored": Condition("rag_wide_anchored", 0, None),
        "rag_wide_n1_anchored": Condition("rag_wide_n1_anchored", 0, None),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown condition(s) {unknown}; choose from {list(known)}")
    order = list(known)
    chosen = sorted(dict.fromkeys(names), key=order.index)
    for wide, source in WIDE_FROM.items():
        if wide in chosen and source not in chosen:
            raise SystemExit(f"{wide} takes its k from {source}: run {source} too")
    return [known[n] for n in chosen]


def score(
    record: dict[str, Any], question: Question, answer: Answer, instructions: Sequence[str], reasoning: bool = False
) -> None:
    """Score one answer; with `reasoning`, F1 and answer_words are on the final answer only, and
    the degenerate check reads the facts and the final answer each on its own: a loop or a
    copied instruction in either counts, an answer that restates its own facts does not (a
    thinking model's thinking is not read at all). Until the engine showed its repetition
    controls the answer apart from the facts, the facts' n-gram ban kept answers from
    restating them, and the check read the whole text."""
    evidence = set(question.evidence)
    facts, final, marked = split_reasoning(answer.text) if reasoning else ("", answer.text, True)
    record.update(
        answer=answer.text,
        final_answer=final,
        marker_missing=not marked,
        reasoning_words=len(facts.split()),
        reasoning_tokens=answer.reasoning_tokens,
        f1=round(locomo_f1(final, question.answer, question.category), 4),
        evidence_at_answer=len(evidence & answer.at_answer) / len(evidence),
        evidence_any=len(evidence & answer.ever) / len(evidence),
        context_tokens=round(answer.context_tokens, 1),
        seconds=answer.seconds,
        cpu_seconds=round(answer.cpu_seconds, 3),
        degenerate=[*degenerate(facts, instructions).reasons, *degenerate(final, instructions).reasons],
        answer_words=len(final.split()),
        distinct_memories=len(answer.ever),
        tokens=answer.tokens,
        swaps=answer.swaps,
        retrievals=answer.retrievals,
        **answer.extra,
    )


METRICS = (
    "f1", "evidence_at_answer", "evidence_any", "context_tokens", "seconds", "cpu_seconds", "reasoning_words",
    "answer_words", "reasoning_tokens", "tokens",
)


def summarise(records: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    def block(rows: list[dict[str, Any]]) -> dict[str, Any]:
        f1 = [r["f1"] for r in rows]
        out: dict[str, Any] = {"n": len(rows)}
        out["f1"] = round(float(np.mean(f1)), 4) if rows else float("nan")
        out["f1_ci"] = bootstrap_ci(f1, seed)
        for metric in METRICS[1:]:
            values = [r[metric] for r in rows]
            name = f"{metric}_per_answer" if metric.endswith("seconds") else metric
            out[name] = round(float(np.mean(values)), 4) if rows else float("nan")
            if metric.startswith("evidence"):
                out[f"{metric}_ci"] = bootstrap_ci(values, seed)
        out["degenerate_rate"] = round(float(np.mean([bool(r["degenerate"]) for r in rows])), 4) if rows else 0.0
        out["marker_missing_rate"] = round(float(np.mean([r["marker_missing"] for r in rows])), 4) if rows else 0.0
        out["swaps_per_answer"] = round(float(np.mean([r["swaps"] for r in rows])), 3) if rows else 0.0
        tokens = sum(r["tokens"] for r in rows)
        out["swaps_per_100_tokens"] = round(100.0 * sum(r["swaps"] for r in rows) / tokens, 2) if tokens else 0.0
        return out

    summary = block(records)
    summary["per_category"] = {
        name: block([r for r in records if r["category"] == number]) for number, name in CATEGORIES.items()
    }
    return summary


def paired_difference(a: list[float], b: list[float], seed: int) -> dict[str, Any]:
    """Mean of a - b over the same questions, with its 95% bootstrap interval."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return {"mean": round(float(diff.mean()), 4), "ci": bootstrap_ci(diff, seed)}


ALL_HEADROOM = 1024
"""Context left for system prompt, question and answer when `all` checks that the pool fits."""


def pool_tokens(engine: StreamingEngine) -> int:
    """Tokens of a memory block holding the engine's whole pool (the pool keeps each memory's
    count in the engine's model's tokens)."""
    builder = PromptBuilder(engine.tokenizer, "", system_prompt=engine.system_prompt)
    return builder.block_overhead() + engine.pool.total_tokens


def report(records: dict[str, list[dict[str, Any]]], model: str, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """The JSON document: per-condition summaries, paired stream-vs-rag differences, every answer."""
    result: dict[str, Any] = {
        "conditions": {name: summarise(rows, seed) for name, rows in records.items() if rows},
        "model": model,
        "settings": settings,
    }
    paired = {}
    for a, b in PAIRED:
        if records.get(a) and records.get(b):
            for metric in ("f1", "evidence_any", "evidence_at_answer"):
                paired[f"{a} - {b}, {metric}"] = paired_difference(
                    [r[metric] for r in records[a]], [r[metric] for r in records[b]], seed
                )
    for wide, source in WIDE_FROM.items():
        if records.get(source) and records.get(wide):
            ratio = result["conditions"][source]["context_tokens"] / max(result["conditions"][wide]["context_tokens"], 1e-9)
            result[f"{source}_context_vs_{wide}"] = round(ratio, 3)
    result["paired"] = paired
    result["answers"] = records
    return result


def model_name(model: Any) -> str:
    return str(getattr(model.config, "name_or_path", "") or type(model).__name__)


def print_table(result: dict[str, Any]) -> None:
    print("\n| condition | F1 [95% CI] | evidence at answer | evidence any | context tokens | s/answer (CPU s) | "
          "degenerate | reasoning words | answer words | no marker | "
          + " | ".join(f"F1 {name}" for name in CATEGORIES.values()) + " |")
    print("|---" * (10 + len(CATEGORIES)) + "|")
    for name, c in result["conditions"].items():
        cats = " | ".join(
            f"{c['per_category'][n]['f1']:.3f} (n={c['per_category'][n]['n']})" for n in CATEGORIES.values()
        )
        print(
            f"| {name} | {c['f1']:.3f} [{c['f1_ci'][0]:.3f}, {c['f1_ci'][1]:.3f}] | {c['evidence_at_answer']:.3f} | "
            f"{c['evidence_any']:.3f} | {c['context_tokens']:.0f} | {c['seconds_per_answer']:.2f} ({c['cpu_seconds_per_answer']:.2f}) | "
            f"{c['degenerate_rate']:.3f} | {c['reasoning_words']:.1f} | {c['answer_words']:.1f} | "
            f"{c['marker_missing_rate']:.3f} | {cats} |"
        )
    for name, diff in result.get("paired", {}).items():
        print(f"{name}: {diff['mean']:+.4f} [{diff['ci'][0]:+.4f}, {diff['ci'][1]:+.4f}]")


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="locomo10.json-format file")
    parser.add_argument("--questions", type=int, default=60, help="questions, spread evenly over conversations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--model", default=None, help="SMEM_MODEL value (default: the packaged local model)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--conditions", nargs="+", default=["none", "rag", "stream", "stream_n1", "rag_wide"])
    parser.add_argument("--all", action="store_true", help="add the every-memory condition (slow on a CPU)")
    parser.add_argument("--only", nargs="+", default=None, metavar="SAMPLE_ID",
                        help="ask only the sampled questions of these conversations: the sample is drawn over all "
                        "of them first, so runs split over processes ask the same questions as one run")
    parser.add_argument("--update-every-n", type=int, default=DEFAULT_UPDATE_EVERY_N, help="N of `stream`")
    parser.add_argument("--splice-margin", type=float, default=None,
                        help="incumbent margin of `stream_n1_splice` (default: the engine's)")
    parser.add_argument("--share-lines", action="store_true",
                        help="splice swaps put back lines read by earlier answers on the same conversation "
                        "(one LineStore per conversation, as per session in the app; default: per answer)")
    parser.add_argument("--read-ahead", action="store_true",
                        help="read every memory line of a conversation ahead of its questions "
                        "(`StreamingEngine.read_ahead`, as the app does at start); splice swaps put them back")
    parser.add_argument("--read-ahead-run", type=int, default=READ_AHEAD_RUN_LINES,
                        help="with --read-ahead: lines read in runs of this many consecutive memories (1: alone; "
                        "default: the engine's)")
    parser.add_argument("--uncertainty-threshold", type=float, default=None,
                        help="token probability under which `flare` re-retrieves (default: the engine's)")
    parser.add_argument("--lookahead-tokens", type=int, default=LOOKAHEAD_TOKENS,
                        help="longest draft of the look-ahead conditions (it stops at the first sentence end)")
    parser.add_argument("--extra-memories", type=int, default=ANCHORED_EXTRA_MEMORIES,
                        help="slots the anchored conditions' re-retrievals fill beside the first 5 memories")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default 64: LoCoMo asks for a short phrase (its runs allow 32 tokens), room for a "
                        "sentence; 128 with --reasoning: room for three short sentences of facts and the answer")
    parser.add_argument("--reasoning", action="store_true",
                        help="ask every condition for \"Facts:\" (1-3 short sentences), then \"Answer:\"; score "
                        "the final answer only")
    parser.add_argument("--force-answer", action="store_true",
                        help="with --reasoning: a reply that would end before \"Answer:\" writes it and goes on "
                        "(AnswerBeforeEnd), in every condition")
    parser.add_argument("--temperature", type=float, default=None,
                        help="0 = greedy; default: the engine's (the model's decoding), seeded per question")
    parser.add_argument("--no-thinking", action="store_true", help="enable_thinking=False for models that think")
    parser.add_argument(
        "--sample-memories", action="store_true",
        help="draw the memories as the app and the API do by default (seeded per answer, at the pool's softmax "
        "temperature) instead of by argmax",
    )
    parser.add_argument(
        "--swap", default="exact", choices=["exact", "splice", "slots", "auto"],
        help="swap mode (default exact, the reference: slot mode trims each memory line to its slot, "
        "40 tokens, and LoCoMo turns are often longer)",
    )
    parser.add_argument(
        "--swap-budget", default="auto",
        help="exact swaps' re-read tokens per generated token: auto (the engine's: rationed only for a model that "
        "cannot splice, on a CPU; until 2026-11-28 auto rationed every exact swap on a CPU at 6, so pass 6 to "
        "reproduce runs of that time), none (every swap runs: the reference against slot swaps) or a number",
    )
    args = parser.parse_args(argv)
    if args.force_answer and not args.reasoning:
        parser.error("--force-answer needs --reasoning: without it there is no answer marker to write")
    config = print_run_config(args)
    budget_choice = args.swap_budget.lower()
    swap_budget = "auto" if budget_choice == "auto" else None if budget_choice == "none" else float(budget_choice)

    from smem.generation.models import load as load_model
    from smem.memory.embedder import default_embedder, embed_documents

    names = list(args.conditions) + (["all"] if args.all else [])
    plan = conditions(
        names, args.update_every_n, args.uncertainty_threshold, args.splice_margin, args.lookahead_tokens,
        args.extra_memories,
    )
    conversations = load(args.data)
    picks = sample_questions(conversations, args.questions, args.seed)
    if args.only:
        picks = [(c, q) for c, q in picks if conversations[c].sample_id in set(args.only)]
    model, tokenizer = load_model(args.model, args.device)
    context_limit = int(getattr(model.config.get_text_config(), "max_position_embeddings", 0) or 0)
    embedder = default_embedder()
    max_new_tokens = args.max_new_tokens or (REASONING_MAX_NEW_TOKENS if args.reasoning else ANSWER_MAX_NEW_TOKENS)
    decoding: dict[str, Any] = {"max_new_tokens": max_new_tokens, "enable_thinking": not args.no_thinking}
    if args.temperature is not None:
        decoding["temperature"] = args.temperature
    if args.sample_memories:  # drawn with each answer's seed (--seed + the question's index), as the app draws
        decoding["sample_memories"] = True
    settings = {
        "data": str(args.data),
        "questions": len(picks),
        "seed": args.seed,
        "conditions": [c.name for c in plan],
        "k": RAG_K,
        "stream_update_every_n": args.update_every_n,
        "lookahead_tokens": args.lookahead_tokens,
        "extra_memories": args.extra_memories,
        "swap": args.swap,
        "swap_budget": args.swap_budget,
        "share_lines": args.share_lines,
        "read_ahead": args.read_ahead and {"run_lines": args.read_ahead_run},
        **decoding,
        "temperature": "engine default" if args.temperature is None else args.temperature,
        "reasoning": args.reasoning and REASONING_INSTRUCTION,
        "force_answer": args.force_answer,
        "message_suffix": "" if args.reasoning else SHORT_ANSWER,
        "temporal_hint": TEMPORAL_HINT,
        "learn": False,
        "embedder": getattr(embedder, "name", type(embedder).__name__),
        "device": args.device or str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "machine": config["machine"],
        "smem": config["settings"],
    }
    for key, value in settings.items():  # what this run used, nanoGPT style
        print(f"{key} = {value}")

    instructions = [*FIXED_TEXTS, REASONING_INSTRUCTION if args.reasoning else SHORT_ANSWER, TEMPORAL_HINT]
    # the engine's prompted reasoning with LoCoMo's format request; none without --reasoning, whatever the model's profile says
    reasoning = PromptedReasoning(REASONING_INSTRUCTION, force_answer=args.force_answer) if args.reasoning else None
    records: dict[str, list[dict[str, Any]]] = {c.name: [] for c in plan}
    started = time.perf_counter()
    by_conversation: dict[int, list[int]] = {}
    for conv_index, q_index in picks:
        by_conversation.setdefault(conv_index, []).append(q_index)
    done_count = 0
    for conv_index, q_indices in by_conversation.items():
        conv = conversations[conv_index]
        pool = build_pool(conv, embedder, embed_documents(embedder, conv.texts))
        # --share-lines: one line store per conversation, as one per session pool in the app
        store = LineStore() if args.share_lines else None
        engine = StreamingEngine(
            model, tokenizer, pool, swap=args.swap, swap_budget=swap_budget, line_store=store, reasoning=reasoning
        )
        ahead: Optional[LineStore] = None
        if args.read_ahead:  # the stores answers use fall back to it, as a runtime's pools do
            ahead = LineStore(max_lines=len(pool))
            tick = time.perf_counter()
            read = engine.read_ahead(ahead, run_lines=args.read_ahead_run)
            print(f"{conv.sample_id}: read ahead {len(ahead)} lines, {read} tokens in {time.perf_counter() - tick:.0f} s",
                  flush=True)
            if store is not None:
                store.fallback = ahead
        all_fits = "all" in names and pool_tokens(engine) + ALL_HEADROOM <= context_limit
        for q_index in q_indices:
            question = question_at(conv, q_index)
            message = question_message(question, args.reasoning)
            answers: dict[str, Answer] = {}
            ks: dict[str, Optional[int]] = {}  # memories each condition was asked for
            for condition in plan:
                k = condition.max_memories
                reused: Optional[str] = None  # the condition whose identical answer is reused
                if condition.name in WIDE_FROM:
                    k = max(len(answers[WIDE_FROM[condition.name]].ever), RAG_K)
                    # a retrieve-once run with the same k and decoding gives the same answer
                    same = [name for name, kk in ks.items() if kk == k and name in ("rag", *WIDE_FROM)]
                    if same:
                        answers[condition.name], reused = answers[same[0]], same[0]
                if condition.name == "all":
                    if not all_fits:
                        continue
                    k = len(pool)
                ks[condition.name] = k
                if reused is None:
                    if ahead is not None and store is None:  # a fresh store per answer, behind it the lines read ahead
                        engine.line_store = LineStore(fallback=ahead)
                    answers[condition.name] = ask(
                        engine, message, conv.now, args.reasoning, update_every_n=condition.update_every_n,
                        max_memories=k, seed=args.seed + q_index, **decoding,
                        **{"extra_memories": 0, **dict(condition.options)},  # anchored only where the condition says
                    )
                record = {"conversation": conv.sample_id, "question": question.text, "category": question.category,
                          "gold": question.answer, "k": k, "reused_from": reused}
                score(record, question, answers[condition.name], instructions, args.reasoning)
                records[condition.name].append(record)
            done_count += 1
            elapsed = time.perf_counter() - started
            print(f"[{done_count}/{len(picks)}] {elapsed:.0f}s {conv.sample_id} cat {question.category}: "
                  + "  ".join(f"{name}={records[name][-1]['f1']:.2f}" for name in answers), flush=True)
            if args.json:  # rewritten after every question: a run cut short still leaves its figures
                partial = {**settings, "wall_seconds": round(elapsed, 1), "answered": done_count}
                args.json.write_text(json.dumps(report(records, model_name(model), partial, args.seed), indent=1))

    result = report(records, model_name(model), {**settings, "wall_seconds": round(time.perf_counter() - started, 1)},
                    args.seed)
    print_table(result)
    for wide, source in WIDE_FROM.items():
        if f"{source}_context_vs_{wide}" in result:
            print(f"{source} context tokens / {wide}: {result[f'{source}_context_vs_{wide}']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
