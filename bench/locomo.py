"""LoCoMo retrieval recall: BM25 vs plain cosine vs MemoryPool, same embedder; ablations of
the Hebbian terms, a learning curve and link statistics.

Each dialog turn becomes one memory worded `{speaker} said, "{text}"` (plus
` and shared {blip_caption}`), created at its session's date and added in dialog order (so
adjacent turns of a session get encoding links); questions of categories 1–4 are asked in file
order, `now` just after the last session. Recall@k is the share of a question's evidence turns
among the first k memories retrieved.

"Learning on" learns like the streaming engine does from an answer: the first `--context`
memories retrieved (the app puts 5 in context) are reinforced together with the question as
the query. "Learning off" keeps the links made at encoding and learns nothing from the
questions; "no Hebbian wiring" has neither, so the three rows separate what encoding links
and learning from use each add. Nothing else reaches the pool: evidence, answers and
categories are only read to score recall and, after the run, to count how many learned links
joined two evidence turns.

    python bench/locomo.py --data ../shared/data/locomo-dev.json            # main table
    python bench/locomo.py --data ... --ablate --curve --links             # the docs' tables
    python bench/locomo.py --data ... --sweep links=0.5,1,2 encoding_window=1,2,3 # knob sensitivity
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runlog import print_run_config  # noqa: E402  (bench/ is on sys.path when a benchmark runs)

from smem import MemoryPool, ScoringWeights  # noqa: E402
from smem.memory.embedder import default_embedder, embed_documents  # noqa: E402

KS = (5, 10, 25)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
CONTEXT = 5
"""Memories the app puts in context per answer (the engine's default `max_memories`)."""


@dataclass
class Conversation:
    sample_id: str
    ids: list[str]
    texts: list[str]
    created: list[datetime]
    questions: list[tuple[str, list[str], int]]
    """(question, evidence ids present in the conversation, category)."""
    now: datetime
    skipped: int = 0
    answers: list[str] = field(default_factory=list)
    """Gold answers, parallel to `questions`, as LoCoMo scores them (category 3: the part before
    the first ';'). Kept apart from the questions: only the answer benchmark's scoring reads them."""


def parse_date(text: str) -> datetime:
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)


def load(path: Path) -> list[Conversation]:
    conversations = []
    for sample in json.loads(path.read_text(encoding="utf-8")):
        conv = sample["conversation"]
        ids, texts, created = [], [], []
        sessions = sorted(
            (int(m.group(1)) for key in conv if (m := re.fullmatch(r"session_(\d+)", key))),
        )
        for number in sessions:
            when = parse_date(conv[f"session_{number}_date_time"])
            for turn in conv[f"session_{number}"]:
                text = f'{turn["speaker"]} said, "{turn["text"]}"'
                if turn.get("blip_caption"):
                    text += f' and shared {turn["blip_caption"]}'
                ids.append(turn["dia_id"])
                texts.append(text)
                created.append(when)
        known = set(ids)
        questions, answers, skipped = [], [], 0
        for qa in sample["qa"]:
            if qa.get("category") not in CATEGORIES:
                continue
            evidence = {part.strip() for raw in qa.get("evidence", []) for part in re.split(r"[;,\s]+", raw) if part.strip()}
            evidence &= known
            if not evidence:
                skipped += 1
                continue
            questions.append((qa["question"], sorted(evidence), qa["category"]))
            answer = str(qa.get("answer", ""))
            answers.append(answer.split(";")[0].strip() if qa["category"] == 3 else answer)
        conversations.append(
            Conversation(
                sample["sample_id"], ids, texts, created, questions, max(created) + timedelta(days=1), skipped, answers
            )
        )
    return conversations


@dataclass
class Recall:
    hits: dict[int, list[float]] = field(default_factory=lambda: {k: [] for k in KS})
    by_category: dict[int, list[float]] = field(default_factory=dict)

    def add(self, ranked: list[str], evidence: list[str], category: int) -> None:
        for k in KS:
            self.hits[k].append(len(set(ranked[:k]) & set(evidence)) / len(evidence))
        self.by_category.setdefault(category, []).append(len(set(ranked[:10]) & set(evidence)) / len(evidence))

    def row(self) -> list[float]:
        return [float(np.mean(self.hits[k])) for k in KS]

    def categories(self) -> list[float]:
        return [float(np.mean(self.by_category.get(c, [np.nan]))) for c in CATEGORIES]


def run_bm25(conv: Conversation, recall: Recall) -> None:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(conv.texts, stopwords="en", show_progress=False), show_progress=False)
    for question, evidence, category in conv.questions:
        docs, _ = retriever.retrieve(
            bm25s.tokenize([question], stopwords="en", show_progress=False), k=max(KS), show_progress=False
        )
        recall.add([conv.ids[i] for i in docs[0]], evidence, category)


def run_cosine(conv: Conversation, vectors: np.ndarray, queries: np.ndarray, recall: Recall) -> None:
    for (question, evidence, category), query in zip(conv.questions, queries):
        order = np.argsort(-(vectors @ query))[: max(KS)]
        recall.add([conv.ids[i] for i in order], evidence, category)


def build_pool(conv: Conversation, embedder, vectors: np.ndarray, **options) -> MemoryPool:
    """The pool sees the turns (id, text, session date) and nothing else of the file."""
    pool = MemoryPool(embedder, **options)
    pool.add_many(
        [{"id": i, "content": t, "created_at": c} for i, t, c in zip(conv.ids, conv.texts, conv.created)],
        embeddings=vectors,
    )
    return pool


def run_pool(
    conv: Conversation,
    embedder,
    vectors: np.ndarray,
    queries: np.ndarray,
    recall: Optional[Recall] = None,
    *,
    learn: bool = True,
    context: int = CONTEXT,
    order: Optional[Sequence[int]] = None,
    per_question: Optional[list[float]] = None,
    **options,
) -> MemoryPool:
    """Ask the questions (in `order`, default file order) and learn from each like an answer.

    Only the question text and its embedding reach the pool; `evidence` is read after the
    retrieval, to score it.
    """
    pool = build_pool(conv, embedder, vectors, **options)
    for number in range(len(conv.questions)) if order is None else order:
        question, evidence, category = conv.questions[number]
        query = queries[number]
        hits = pool.retrieve(question, max_memories=max(KS), now=conv.now, learn=False, query_vector=query)
        if learn and hits:
            used = hits[:context]
            top = used[0].score
            pool.reinforce(
                [hit.id for hit in used],
                query=query,
                now=conv.now,
                activity=[hit.score / top if top > 0 else 0.0 for hit in used],
            )
        ranked = [hit.id for hit in hits]
        if recall is not None:
            recall.add(ranked, evidence, category)
        if per_question is not None:
            per_question.append(len(set(ranked[:10]) & set(evidence)) / len(evidence))
    return pool


def link_statistics(conv: Conversation, pool: MemoryPool) -> dict[str, float]:
    """After the run, for the report only: links per kind, and the share joining two
    evidence turns of one question."""
    evidence_pairs = {frozenset(pair) for _, evidence, _ in conv.questions for pair in itertools.combinations(evidence, 2)}
    stats: dict[str, float] = {"questions": len(conv.questions)}
    for kind in ("learned", "encoding"):
        links = pool.links(kind)
        stats[f"{kind} links"] = len(links)
        stats[f"{kind} evidence"] = sum(frozenset((a, b)) in evidence_pairs for a, b, _ in links)
        stats[f"{kind} weight"] = sum(w for _, _, w in links)
        stats[f"{kind} evidence weight"] = sum(w for a, b, w in links if frozenset((a, b)) in evidence_pairs)
    stats["evidence pairs"] = len(evidence_pairs)
    return stats


@dataclass
class Setup:
    conversations: list[Conversation]
    embedder: object
    vectors: list[np.ndarray]
    queries: list[np.ndarray]
    options: dict


def evaluate(setup: Setup, **run_options) -> Recall:
    recall = Recall()
    for conv, vectors, queries in zip(setup.conversations, setup.vectors, setup.queries):
        run_pool(conv, setup.embedder, vectors, queries, recall, **{**setup.options, **run_options})
    return recall


def table_header(first: str) -> str:
    return (
        f"| {first} | " + " | ".join(f"recall@{k}" for k in KS) + " | "
        + " | ".join(f"R@10 {name}" for name in CATEGORIES.values()) + " |\n" + "|---" * (1 + len(KS) + len(CATEGORIES)) + "|"
    )


def table_row(name: str, recall: Recall) -> str:
    return f"| {name} | " + " | ".join(f"{v:.3f}" for v in recall.row() + recall.categories()) + " |"


def with_weights(setup: Setup, **changes: float) -> dict:
    """Run options with ScoringWeights fields changed."""
    return {"weights": replace(setup.options["weights"], **changes)}


def no_wiring(setup: Setup) -> dict:
    """Run options with no Hebbian wiring at all: no links made at encoding (the contiguity
    links between adjacent same-day turns) and no learning from the questions. Against it,
    learning on measures everything Hebbian the pool learns; against learning off (encoding
    links kept), what it learns from use alone."""
    return {"learn": False, **with_weights(setup, encoding_window=0)}


def ablation(setup: Setup) -> None:
    """One row per Hebbian term removed from the full system (learning on)."""
    zero = dict(recency=0.0, frequency=0.0, emotion=0.0, links=0.0, encoding_window=0, time=0.0)
    rows = {
        "hybrid similarity only (no boosts, no learning)": dict(learn=False, association_weight=0.0, **with_weights(setup, **zero)),
        "full system, learning off": dict(learn=False),
        "full system, learning on": {},
        "− encoding links": with_weights(setup, encoding_window=0),
        "− all links (lending weight 0)": with_weights(setup, links=0.0),
        "− query association": dict(association_weight=0.0),
        "− frequency": with_weights(setup, frequency=0.0),
        "− recency": with_weights(setup, recency=0.0),
        "− time named in the query": with_weights(setup, time=0.0),
        "− emotion": with_weights(setup, emotion=0.0),
        "− habituation": with_weights(setup, habituation=0.0),
        "+ learned links lend (learned_links 0.1)": with_weights(setup, learned_links=0.1),
    }
    print("\nAblation (dev):\n" + table_header("system"))
    for name, run_options in rows.items():
        print(table_row(name, evaluate(setup, **run_options)), flush=True)


def sweep(setup: Setup, knobs: list[str]) -> None:
    """Recall@10 with one knob changed at a time from the defaults (sensitivity)."""
    print("\nSensitivity (dev, learning on):\n" + table_header("knob = value"))
    for item in knobs:
        key, values = item.split("=")
        for value in values.split(","):
            if key in ("association_weight", "diversity_weight", "lexical_weight"):
                run_options = {key: float(value)}
            elif key == "context":
                run_options = {"context": int(value)}
            else:
                number = int(value) if key == "encoding_window" else float(value)
                run_options = with_weights(setup, **{key: number})
            print(table_row(f"{key} = {value}", evaluate(setup, **run_options)), flush=True)


def learning_curve(setup: Setup, shuffles: int = 3, parts: int = 5) -> None:
    """Learning on minus off, per fifth of the question stream: file order and shuffled."""
    def gains(order_for) -> np.ndarray:
        on, off = [], []
        for conv, vectors, queries in zip(setup.conversations, setup.vectors, setup.queries):
            order = order_for(conv)
            for learn, out in ((True, on), (False, off)):
                scores: list[float] = []
                run_pool(conv, setup.embedder, vectors, queries, learn=learn, order=order, per_question=scores, **setup.options)
                out.append(np.array_split(np.array(scores), parts))
        by_part_on = [np.mean(np.concatenate([c[p] for c in on])) for p in range(parts)]
        by_part_off = [np.mean(np.concatenate([c[p] for c in off])) for p in range(parts)]
        return np.array([by_part_on, by_part_off])

    file_order = gains(lambda conv: None)
    shuffled = np.mean(
        [gains(lambda conv, seed=seed: np.random.default_rng(seed).permutation(len(conv.questions))) for seed in range(shuffles)],
        axis=0,
    )
    print(f"\nLearning curve (dev): recall@10 per fifth of each conversation's questions, on / off / gain"
          f" (shuffled: mean of {shuffles} orders)")
    print("| order | " + " | ".join(f"part {p + 1}" for p in range(parts)) + " |\n" + "|---" * (parts + 1) + "|")
    for name, (on, off) in (("file order", file_order), ("shuffled", shuffled)):
        print(f"| {name} | " + " | ".join(f"{a:.3f} / {b:.3f} / {a - b:+.3f}" for a, b in zip(on, off)) + " |")


def by_conversation(setup: Setup) -> None:
    """Learning on minus off, and minus no Hebbian wiring at all, per conversation: is the
    overall difference one conversation's?"""
    print("\nPer conversation (dev): recall@10 learning on / off / no Hebbian wiring; differences from learning on")
    print("| conversation | questions | recall@10 on / off / no wiring | on − off (recall@5) | on − no wiring (recall@5) |\n"
          "|---|---|---|---|---|")
    for conv, vectors, queries in zip(setup.conversations, setup.vectors, setup.queries):
        rows = []
        for options in ({**setup.options}, {**setup.options, "learn": False}, {**setup.options, **no_wiring(setup)}):
            recall = Recall()
            run_pool(conv, setup.embedder, vectors, queries, recall, **options)
            rows.append(recall.row())
        (on5, on10, _), (off5, off10, _), (bare5, bare10, _) = rows
        print(f"| {conv.sample_id} | {len(conv.questions)} | {on10:.3f} / {off10:.3f} / {bare10:.3f} | "
              f"{on10 - off10:+.3f} ({on5 - off5:+.3f}) | {on10 - bare10:+.3f} ({on5 - bare5:+.3f}) |")


def hubs_report(setup: Setup, buckets: Sequence[int] = (0, 1, 2, 4, 8)) -> None:
    """Learning off, for the report only: how often a memory at a given rank is evidence, by
    how many earlier questions had it among their first `context` — do hubs answer less?"""
    context = setup.options.get("context", CONTEXT)
    ranks = ((0, 5), (5, 10), (10, max(KS)))
    hits = np.zeros((len(ranks), len(buckets))), np.zeros((len(ranks), len(buckets)))
    for conv, vectors, queries in zip(setup.conversations, setup.vectors, setup.queries):
        pool = build_pool(conv, setup.embedder, vectors, **{k: v for k, v in setup.options.items() if k != "context"})
        seen: dict[str, int] = {}
        for (question, evidence, _), query in zip(conv.questions, queries):
            ranked = [hit.id for hit in pool.retrieve(question, max_memories=max(KS), now=conv.now, learn=False, query_vector=query)]
            for rank, memory_id in enumerate(ranked):
                row = next(i for i, (low, high) in enumerate(ranks) if low <= rank < high)
                column = int(np.searchsorted(buckets, seen.get(memory_id, 0), side="right")) - 1
                hits[0][row, column] += memory_id in evidence
                hits[1][row, column] += 1
            for memory_id in ranked[:context]:
                seen[memory_id] = seen.get(memory_id, 0) + 1
    labels = [f"{low}" if high == low + 1 else f"{low}–{high - 1}" for low, high in zip(buckets, [*buckets[1:], 0])]
    labels[-1] = f"≥ {buckets[-1]}"
    print(f"\nHubs (dev, learning off; evidence used only here): share of memories at a rank that are evidence,"
          f" by earlier questions that had them in their first {context}")
    print("| rank | " + " | ".join(f"{label} earlier" for label in labels) + " |\n" + "|---" * (len(buckets) + 1) + "|")
    for (low, high), evidence, total in zip(ranks, *hits):
        print(f"| {low + 1}–{high} | " + " | ".join(f"{e / max(t, 1):.3f} ({t:.0f})" for e, t in zip(evidence, total)) + " |")


def links_report(setup: Setup) -> None:
    totals: dict[str, float] = {}
    for conv, vectors, queries in zip(setup.conversations, setup.vectors, setup.queries):
        pool = run_pool(conv, setup.embedder, vectors, queries, **setup.options)
        for key, value in link_statistics(conv, pool).items():
            totals[key] = totals.get(key, 0.0) + value
    print("\nLinks after one pass (dev; evidence used only here, after the run):")
    print("| kind | links | per 100 questions | share joining two evidence turns of one question | share of weight |")
    print("|---|---|---|---|---|")
    for kind in ("learned", "encoding"):
        count, weight = totals[f"{kind} links"], totals[f"{kind} weight"]
        print(f"| {kind} | {count:.0f} | {100 * count / totals['questions']:.0f} | "
              f"{totals[f'{kind} evidence'] / max(count, 1):.3f} | {totals[f'{kind} evidence weight'] / max(weight, 1e-9):.3f} |")
    print(f"({totals['evidence pairs']:.0f} evidence pairs over {totals['questions']:.0f} questions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="locomo10.json-format file")
    parser.add_argument("--embedder", default=None, help="sentence-transformers id/path (default: packaged MiniLM)")
    parser.add_argument("--weights", nargs="*", default=[], help="ScoringWeights overrides, key=value")
    parser.add_argument("--diversity", type=float, default=None)
    parser.add_argument("--association", type=float, default=None)
    parser.add_argument("--lexical", type=float, default=None)
    parser.add_argument("--context", type=int, default=CONTEXT, help="memories reinforced per question")
    parser.add_argument("--ablate", action="store_true", help="one row per Hebbian term removed")
    parser.add_argument("--curve", action="store_true", help="learning curve, file order vs shuffled")
    parser.add_argument("--links", action="store_true", help="link statistics after one pass")
    parser.add_argument("--hubs", action="store_true", help="evidence share by rank and earlier retrievals")
    parser.add_argument("--by-conversation", action="store_true", help="learning on − off per conversation")
    parser.add_argument("--sweep", nargs="*", default=[], help="knob=v1,v2 ... (one knob at a time)")
    parser.add_argument("--skip-main", action="store_true", help="only the extra tables")
    args = parser.parse_args()
    print_run_config(args)

    conversations = load(args.data)
    embedder = default_embedder(args.embedder)
    weights = ScoringWeights()
    for item in args.weights:
        key, value = item.split("=")
        weights = replace(weights, **{key: int(value) if key == "encoding_window" else float(value)})
    options: dict = {"weights": weights, "context": args.context}
    for key, value in (("diversity_weight", args.diversity), ("association_weight", args.association),
                       ("lexical_weight", args.lexical)):
        if value is not None:
            options[key] = value

    started = time.perf_counter()
    vectors = [embed_documents(embedder, conv.texts) for conv in conversations]
    # Questions go through the same disk cache: MiniLM embeds queries and documents alike.
    queries = [embed_documents(embedder, [q for q, _, _ in conv.questions]) for conv in conversations]
    setup = Setup(conversations, embedder, vectors, queries, options)
    questions = sum(len(c.questions) for c in conversations)
    skipped = sum(c.skipped for c in conversations)
    print(f"{len(conversations)} conversations, {sum(len(c.ids) for c in conversations)} turns, "
          f"{questions} questions (categories 1-4; {skipped} without usable evidence skipped), "
          f"embedder {embedder.name}")
    print(f"pool options: {options}")
    if not args.skip_main:
        systems = {"BM25": Recall(), "cosine": Recall()}
        for conv, vecs, qs in zip(conversations, vectors, queries):
            run_bm25(conv, systems["BM25"])
            run_cosine(conv, vecs, qs, systems["cosine"])
        systems["MemoryPool"] = evaluate(setup)
        systems["MemoryPool, learning off"] = evaluate(setup, learn=False)
        systems["MemoryPool, no Hebbian wiring (no encoding links, learning off)"] = evaluate(setup, **no_wiring(setup))
        print("\n" + table_header("system"))
        for name, recall in systems.items():
            print(table_row(name, recall))
    if args.ablate:
        ablation(setup)
    if args.sweep:
        sweep(setup, args.sweep)
    if args.curve:
        learning_curve(setup)
    if args.links:
        links_report(setup)
    if args.hubs:
        hubs_report(setup)
    if args.by_conversation:
        by_conversation(setup)
    print(f"\n{time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
