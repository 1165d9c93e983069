"""Benchmark labels never reach the pool: LoCoMo's evidence, answers and categories are
only read to score recall. Two files that differ only in their labels must leave the pool in
exactly the same state, and nothing of a label may appear in what the pool holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import locomo  # noqa: E402

CANARY = "zebra-canary-7731"


def sample(evidence: list[str], answer: str, category: int) -> dict:
    turns = [
        {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a dog last week."},
        {"speaker": "Ben", "dia_id": "D1:2", "text": "What breed is it?"},
        {"speaker": "Ana", "dia_id": "D1:3", "text": "A beagle, he loves the beach."},
    ]
    later = [
        {"speaker": "Ben", "dia_id": "D2:1", "text": "I started pottery classes."},
        {"speaker": "Ana", "dia_id": "D2:2", "text": "Did the beagle come to the beach again?"},
    ]
    return {
        "sample_id": "synthetic",
        "conversation": {
            "speaker_a": "Ana",
            "speaker_b": "Ben",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": turns,
            "session_2_date_time": "10:37 am on 27 June, 2023",
            "session_2": later,
        },
        "qa": [
            {"question": "What breed is Ana's dog?", "answer": answer, "evidence": evidence, "category": category},
            {"question": "What did Ben start in June 2023?", "answer": answer, "evidence": ["D2:1"], "category": category},
            {"question": "Where does the beagle like to go?", "answer": answer, "evidence": evidence, "category": category},
        ],
    }


def run(tmp_path: Path, keyed, name: str, evidence: list[str], answer: str, category: int):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps([sample(evidence, answer, category)]), encoding="utf-8")
    [conv] = locomo.load(path)
    embedder = keyed(dim=16)
    vectors = embedder.encode(conv.texts)
    queries = embedder.encode([q for q, _, _ in conv.questions])
    recall = locomo.Recall()
    pool = locomo.run_pool(conv, embedder, vectors, queries, recall, weights=locomo.ScoringWeights())
    pool.save(tmp_path / f"{name}.npz")
    return pool, recall, (tmp_path / f"{name}.npz").read_bytes()


def test_labels_never_reach_the_pool(tmp_path, keyed):
    first, first_recall, _ = run(tmp_path, keyed, "a", ["D1:3"], "a beagle", 4)
    second, second_recall, saved = run(tmp_path, keyed, "b", ["D1:1", "D2:2"], CANARY, 1)
    assert first_recall.hits != second_recall.hits, "the labels differ, so the recall they score must"
    for name, value in first.learning.to_arrays().items():
        np.testing.assert_array_equal(value, second.learning.to_arrays()[name], err_msg=name)
    assert (first.learning.updates, first.learning.answers) == (second.learning.updates, second.learning.answers) == (3, 3)
    assert [m.to_record() for m in first] == [m.to_record() for m in second]
    assert CANARY.encode() not in saved


def test_the_three_pool_rows_differ_in_what_they_wire(tmp_path, keyed):
    """Learning on, learning off and no Hebbian wiring: encoding links in the first two only,
    learning from the questions in the first only (the main table's three pool rows)."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps([sample(["D1:3"], "a beagle", 4)]), encoding="utf-8")
    [conv] = locomo.load(path)
    embedder = keyed(dim=16)
    vectors, queries = embedder.encode(conv.texts), embedder.encode([q for q, _, _ in conv.questions])
    setup = locomo.Setup([conv], embedder, [vectors], [queries], {"weights": locomo.ScoringWeights()})
    rows = {"on": {}, "off": {"learn": False}, "no wiring": locomo.no_wiring(setup)}
    pools = {name: locomo.run_pool(conv, embedder, vectors, queries, **{**setup.options, **options}) for name, options in rows.items()}
    assert {name: len(pool.links("encoding")) > 0 for name, pool in pools.items()} == {"on": True, "off": True, "no wiring": False}
    assert {name: pool.learning.updates for name, pool in pools.items()} == {"on": 3, "off": 0, "no wiring": 0}
