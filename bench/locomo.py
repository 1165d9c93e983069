"""LoCoMo retrieval recall: BM25 vs plain cosine vs MemoryPool, same embedder.

Each dialog turn becomes one memory worded `{speaker} said, "{text}"` (plus
` and shared {blip_caption}`), created at its session's date; questions of categories 1–4
are asked in file order with learning on, `now` just after the last session. Recall@k is
the share of a question's evidence turns among the first k memories retrieved.

    python bench/locomo.py --data ../shared/data/locomo-dev.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runlog import print_run_config  # noqa: E402  (bench/ is on sys.path when a benchmark runs)

from smem import MemoryPool, ScoringWeights  # noqa: E402
from smem.memory.embedder import default_embedder, embed_documents  # noqa: E402

KS = (5, 10, 25)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


class Question(NamedTuple):
    text: str
    evidence: list[str]
    """Evidence ids present in the conversation."""
    category: int
    answer: str
    """The gold answer as LoCoMo scores it (category 3: the part before the first ';')."""


@dataclass
class Conversation:
    sample_id: str
    ids: list[str]
    texts: list[str]
    created: list[datetime]
    questions: list[Question]
    now: datetime
    skipped: int = 0


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
        questions, skipped = [], 0
        for qa in sample["qa"]:
            if qa.get("category") not in CATEGORIES:
                continue
            evidence = {part.strip() for raw in qa.get("evidence", []) for part in re.split(r"[;,\s]+", raw) if part.strip()}
            evidence &= known
            if not evidence:
                skipped += 1
                continue
            answer = str(qa.get("answer", ""))
            if qa["category"] == 3:  # LoCoMo's evaluation.py scores open-domain answers on their first part
                answer = answer.split(";")[0].strip()
            questions.append(Question(qa["question"], sorted(evidence), qa["category"], answer))
        conversations.append(
            Conversation(sample["sample_id"], ids, texts, created, questions, max(created) + timedelta(days=1), skipped)
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


def run_bm25(conv: Conversation, recall: Recall) -> None:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(conv.texts, stopwords="en", show_progress=False), show_progress=False)
    for question, evidence, category, _ in conv.questions:
        docs, _ = retriever.retrieve(
            bm25s.tokenize([question], stopwords="en", show_progress=False), k=max(KS), show_progress=False
        )
        recall.add([conv.ids[i] for i in docs[0]], evidence, category)


def run_cosine(conv: Conversation, vectors: np.ndarray, queries: np.ndarray, recall: Recall) -> None:
    for (_, evidence, category, _), query in zip(conv.questions, queries):
        order = np.argsort(-(vectors @ query))[: max(KS)]
        recall.add([conv.ids[i] for i in order], evidence, category)


def build_pool(conv: Conversation, embedder, vectors: np.ndarray, **options) -> MemoryPool:
    """The conversation's dialog turns as a pool: text and session date only, no labels."""
    pool = MemoryPool(embedder, **options)
    pool.add_many(
        [{"id": i, "content": t, "created_at": c} for i, t, c in zip(conv.ids, conv.texts, conv.created)],
        embeddings=vectors,
    )
    return pool


def run_pool(
    conv: Conversation, embedder, vectors: np.ndarray, queries: np.ndarray, recall: Recall, learn: bool = True, **options
) -> None:
    pool = build_pool(conv, embedder, vectors, **options)
    for (question, evidence, category, _), query in zip(conv.questions, queries):
        hits = pool.retrieve(question, max_memories=max(KS), now=conv.now, learn=learn, query_vector=query)
        recall.add([hit.id for hit in hits], evidence, category)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="locomo10.json-format file")
    parser.add_argument("--embedder", default=None, help="sentence-transformers id/path (default: packaged MiniLM)")
    parser.add_argument("--weights", nargs="*", default=[], help="ScoringWeights overrides, key=value")
    parser.add_argument("--diversity", type=float, default=None)
    parser.add_argument("--association", type=float, default=None)
    parser.add_argument("--lexical", type=float, default=None)
    args = parser.parse_args()
    print_run_config(args)

    conversations = load(args.data)
    embedder = default_embedder(args.embedder)
    weights = replace(ScoringWeights(), **{k: float(v) for k, v in (item.split("=") for item in args.weights)})
    options = {"weights": weights}
    if args.diversity is not None:
        options["diversity_weight"] = args.diversity
    if args.association is not None:
        options["association_weight"] = args.association
    if args.lexical is not None:
        options["lexical_weight"] = args.lexical

    systems = {"BM25": Recall(), "cosine": Recall(), "MemoryPool": Recall(), "MemoryPool, learning off": Recall()}
    started = time.perf_counter()
    for conv in conversations:
        vectors = embed_documents(embedder, conv.texts)
        queries = embedder.encode([q.text for q in conv.questions])
        run_bm25(conv, systems["BM25"])
        run_cosine(conv, vectors, queries, systems["cosine"])
        run_pool(conv, embedder, vectors, queries, systems["MemoryPool"], **options)
        run_pool(conv, embedder, vectors, queries, systems["MemoryPool, learning off"], learn=False, **options)
    questions = sum(len(c.questions) for c in conversations)
    skipped = sum(c.skipped for c in conversations)
    print(f"{len(conversations)} conversations, {sum(len(c.ids) for c in conversations)} turns, "
          f"{questions} questions (categories 1-4; {skipped} without usable evidence skipped), "
          f"embedder {embedder.name}, {time.perf_counter() - started:.1f}s")
    print(f"pool options: {options}")
    print("\n| system | " + " | ".join(f"recall@{k}" for k in KS) + " | " +
          " | ".join(f"R@10 {name}" for name in CATEGORIES.values()) + " |")
    print("|---" * (1 + len(KS) + len(CATEGORIES)) + "|")
    for name, recall in systems.items():
        per_cat = [float(np.mean(recall.by_category.get(c, [np.nan]))) for c in CATEGORIES]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in recall.row() + per_cat) + " |")


if __name__ == "__main__":
    main()
