"""The grounding benchmark: what counts as a word taken from a memory, the common yardstick, and
its JSON, run end to end on the tiny model."""

from __future__ import annotations

import json

from bench import grounding


def test_a_grounded_word_is_in_a_memory_and_not_in_the_prompt():
    memories = ["Maya's peanut allergy is severe; she carries an EpiPen in her red backpack."]
    prompt = "What do I tell the other parents about Maya's peanut allergy?"
    answer = "Tell them she carries an EpiPen in her backpack, and that the allergy is severe and real."
    assert grounding.grounded_words(answer, memories, prompt) == {"carries", "epipen", "backpack", "severe"}
    assert grounding.grounded_words(answer, [], prompt) == set()
    assert "the" not in grounding.content_words("The EpiPen is in the bag"), "stopwords are not content"


def test_every_condition_is_also_scored_against_the_same_memories():
    def row(answer: str, memory: str) -> dict:
        return {"seed": 1, "prompt": "Plan the trip?", "answer": answer, "memories": [memory]}

    rows = {
        "once": [row("Book the kennel for Biscuit.", "Book the kennel.")],
        "splice": [row("Biscuit goes to Renée.", "Biscuit stays with Renée.")],
    }
    grounding.add_common_grounding(rows)
    assert rows["once"][0]["grounded_common"] == 3, "book, kennel, biscuit: Biscuit is in the other condition's memory"
    assert rows["splice"][0]["grounded_common"] == 2


def test_the_benchmark_writes_its_table_and_every_answer(tmp_path, capsys):
    out = tmp_path / "grounding.json"
    arguments = ["--model", "tiny", "--seeds", "1", "--sets", "tutor", "--conditions", "once", "splice"]
    result = grounding.main([*arguments, "--json", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    assert set(written["conditions"]) == {"once", "splice"} and set(written["paired"]) == {"once - splice"}
    once = written["conditions"]["once"]
    assert once["swaps_per_answer"] == 0 and once["distinct_memories"] == 5, "retrieved once, five memories"
    answers = written["answers"]["splice"]
    assert len(answers) == len(written["answers"]["once"]) > 0 and all(row["tokens"] > 0 for row in answers)
    assert all(0 <= row["grounded_words"] <= row["content_words"] for row in answers)
    assert all(0 <= row["longest_pause_ms"] <= 1000 * row["seconds"] for row in answers)
    assert written["settings"]["update_every_n"] == result["settings"]["update_every_n"] == 5, "the app's CPU settings"
    assert "| splice |" in capsys.readouterr().out
