"""Do long answers use their memories? The app's example prompts, answered as the app answers them.

    python bench/grounding.py --seeds 1 2 3 --json grounding.json

LoCoMo's answers are a short phrase, so `bench/answers.py` cannot see what streaming does to a
long answer. This benchmark asks every example prompt of the shipped memory sets (`memories/*.json`,
the prompts a visitor clicks) at the app's own settings on this device (`actions.app_defaults`:
on a CPU temperature 0.3, 256 new tokens, re-retrieval every 5 tokens, memories drawn from the
softmax), one answer per prompt, seed and condition:

  once          retrieve once (no re-retrieval)
  splice        stream, splice swaps (the CPU default), anchored as every answer is since 28 Nov:
                the memories the answer starts with stay, re-retrievals fill 2 more slots
  splice_replace  the same, with re-retrievals replacing the whole set (extra_memories 0, the
                default before 28 Nov)
  splice_refresh  stream, splice swaps that re-read the block's instruction and the header
  splice_last16 / splice_last48  the same, re-reading the answer's last 16 / 48 tokens too
  splice_all    the same, re-reading the whole answer
  splice_nostore / splice_all_nostore  splice / splice_all reading every newcomer's line (no store)
  splice_kept   splice, reading again the lines that stay after a cut one
  exact         stream, exact swaps, unrationed
  exact_budget  stream, exact swaps rationed by the CPU swap budget

The example prompts have no gold answers, so the measure is unlabelled: **grounded words**, the
answer's content words (3+ letters, not one of scikit-learn's English stopwords) that occur in a
memory the answer had in context and not in the prompt, i.e. words the answer can only have
taken from its memories. Its share of the answer's content words is reported too. It counts use,
not truth: a memory's word used wrongly counts, and a condition that holds more distinct
memories has more words to match (streaming holds 8-13 distinct memories an answer, `once` 5;
the random tiny model "grounds" more words the more memories it sees). So each answer is also
scored against the same memories for every condition: all that any condition had in context for
that prompt and seed (`grounded_common`). Per condition: means, paired differences with 95%
bootstrap intervals over the (prompt, seed) pairs, swaps, degenerate answers, and time per token
(wall and CPU). Every answer is in the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # the repo (smem) and bench/ (its sibling modules), also when imported

import numpy as np  # noqa: E402
from answers import bootstrap_ci, paired_difference  # noqa: E402
from runlog import print_run_config  # noqa: E402
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # noqa: E402
from smem.generation.degenerate import degenerate  # noqa: E402
from smem.generation.engine import StreamingEngine  # noqa: E402
from smem.generation.events import Memories, MemoryUpdate, Token  # noqa: E402
from smem.generation.prompt import FIXED_TEXTS  # noqa: E402
from smem.generation.swap import CPU_SWAP_BUDGET  # noqa: E402
from smem.memory.memory_sets import MemorySets  # noqa: E402
from smem.memory.settings import MemorySettings  # noqa: E402
from smem.ui.actions import app_defaults  # noqa: E402

ONCE_EVERY_N = 1_000_000
"""`update_every_n` of `once`: past any answer's length, so the first retrieval is the only one."""

CONDITIONS: dict[str, dict[str, Any]] = {
    "once": {"engine": {}, "stream": {"update_every_n": ONCE_EVERY_N}},
    "splice": {"engine": {}, "stream": {"swap": "splice"}},
    "splice_replace": {"engine": {}, "stream": {"swap": "splice", "extra_memories": 0}},
    "splice_refresh": {"engine": {"refresh_prompt": True}, "stream": {"swap": "splice"}},
    "splice_last16": {"engine": {"refresh_prompt": True, "reread_answer": 16}, "stream": {"swap": "splice"}},
    "splice_last48": {"engine": {"refresh_prompt": True, "reread_answer": 48}, "stream": {"swap": "splice"}},
    "splice_all": {"engine": {"refresh_prompt": True, "reread_answer": None}, "stream": {"swap": "splice"}},
    "splice_nostore": {"engine": {"reuse_lines": False}, "stream": {"swap": "splice"}},
    "splice_kept": {"engine": {"reread_kept": True}, "stream": {"swap": "splice"}},
    "splice_all_nostore": {
        "engine": {"refresh_prompt": True, "reread_answer": None, "reuse_lines": False},
        "stream": {"swap": "splice"},
    },
    "exact": {"engine": {"swap_budget": None}, "stream": {"swap": "exact"}},
    "exact_budget": {"engine": {"swap_budget": CPU_SWAP_BUDGET}, "stream": {"swap": "exact"}},
}
"""Engine and `stream` keywords of each condition, on top of the app's settings."""

_CONTENT_WORD = re.compile(r"[^\W\d_][\w'-]+")


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ characters (any alphabet) that are not English stopwords
    (scikit-learn's list of 318, so pronouns and "would" do not count as taken from a memory)."""
    return {word for word in _CONTENT_WORD.findall(text.lower()) if len(word) > 2 and word not in ENGLISH_STOP_WORDS}


def grounded_words(answer: str, memories: Sequence[str], prompt: str) -> set[str]:
    """The answer's content words found in `memories` (the ones it had in context) and not in
    the prompt: words it can only have taken from its memories."""
    remembered = set().union(*map(content_words, memories)) if memories else set()
    return content_words(answer) & (remembered - content_words(prompt))


def answer_once(engine: StreamingEngine, prompt: str, options: dict[str, Any]) -> dict[str, Any]:
    """One answer with the memories it had in context, its swaps and its time."""
    tokens: list[str] = []
    seen: dict[str, str] = {}
    swaps = 0
    wall, cpu = time.perf_counter(), time.process_time()
    last: Optional[float] = None
    pause = 0.0  # the longest wait between two tokens: what a visitor sees of a swap late in an answer
    for event in engine.stream(message=prompt, **options):
        if isinstance(event, Token):
            tokens.append(event.text)
            now = time.perf_counter()
            if last is not None:
                pause = max(pause, now - last)
            last = now
        elif isinstance(event, (Memories, MemoryUpdate)):
            seen.update((hit.id, hit.content) for hit in event.memories)
            swaps += isinstance(event, MemoryUpdate)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    answer = "".join(tokens)
    grounded = grounded_words(answer, list(seen.values()), prompt)
    content = content_words(answer)
    return {
        "answer": answer,
        "memories": sorted(seen.values()),
        "distinct_memories": len(seen),
        "swaps": swaps,
        "content_words": len(content),
        "grounded_words": len(grounded),
        "grounded_share": len(grounded) / len(content) if content else 0.0,
        "grounded": sorted(grounded),
        "degenerate": degenerate(answer, FIXED_TEXTS).reasons,
        "tokens": len(engine.tokenizer(answer, add_special_tokens=False).input_ids),
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "longest_pause_ms": round(1000 * pause, 1),
    }


def add_common_grounding(records: dict[str, list[dict[str, Any]]]) -> None:
    """Score every answer against the same memories too: all that any condition had in context
    for its prompt and seed (`grounded_common`). More memories in context no longer means more
    words to match, so this compares conditions on equal terms."""
    union: dict[tuple[int, str], set[str]] = {}
    for row in itertools.chain.from_iterable(records.values()):
        union.setdefault((row["seed"], row["prompt"]), set()).update(row["memories"])
    for row in itertools.chain.from_iterable(records.values()):
        memories = sorted(union[row["seed"], row["prompt"]])
        row["grounded_common"] = len(grounded_words(row["answer"], memories, row["prompt"]))


def summarise(records: dict[str, list[dict[str, Any]]], seed: int) -> dict[str, Any]:
    """Per condition means (with intervals) and every pair of conditions' paired differences."""
    out: dict[str, Any] = {"conditions": {}, "paired": {}}
    for name, rows in records.items():
        tokens = sum(row["tokens"] for row in rows) or 1
        out["conditions"][name] = {
            "answers": len(rows),
            "grounded_words": round(float(np.mean([row["grounded_words"] for row in rows])), 2),
            "grounded_words_ci": bootstrap_ci([row["grounded_words"] for row in rows], seed),
            "grounded_share": round(float(np.mean([row["grounded_share"] for row in rows])), 4),
            "grounded_common": round(float(np.mean([row["grounded_common"] for row in rows])), 2),
            "grounded_common_ci": bootstrap_ci([row["grounded_common"] for row in rows], seed),
            "distinct_memories": round(float(np.mean([row["distinct_memories"] for row in rows])), 2),
            "swaps_per_answer": round(float(np.mean([row["swaps"] for row in rows])), 2),
            "tokens_per_answer": round(tokens / len(rows), 1),
            "degenerate": sum(bool(row["degenerate"]) for row in rows),
            "ms_per_token": round(1000 * sum(row["seconds"] for row in rows) / tokens, 1),
            "cpu_ms_per_token": round(1000 * sum(row["cpu_seconds"] for row in rows) / tokens, 1),
            "longest_pause_ms": round(float(np.mean([row["longest_pause_ms"] for row in rows])), 1),
            "longest_pause_ms_max": max(row["longest_pause_ms"] for row in rows),
        }
    for a, b in itertools.combinations(records, 2):
        out["paired"][f"{a} - {b}"] = {
            metric: paired_difference([row[metric] for row in records[a]], [row[metric] for row in records[b]], seed)
            for metric in ("grounded_words", "grounded_share", "grounded_common")
        }
    return out


def print_table(result: dict[str, Any]) -> None:
    print(
        "\n| condition | grounded words [95% CI] | share | against every condition's memories [95% CI] "
        "| distinct memories | swaps | tokens | degenerate | ms/token (CPU) | longest pause, ms (mean / max) |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, row in result["conditions"].items():
        low, high = row["grounded_words_ci"]
        common_low, common_high = row["grounded_common_ci"]
        print(
            f"| {name} | {row['grounded_words']:.1f} [{low:.1f}, {high:.1f}] | {row['grounded_share']:.3f} | "
            f"{row['grounded_common']:.1f} [{common_low:.1f}, {common_high:.1f}] | "
            f"{row['distinct_memories']:.1f} | {row['swaps_per_answer']:.1f} | {row['tokens_per_answer']:.0f} | "
            f"{row['degenerate']}/{row['answers']} | {row['ms_per_token']:.0f} ({row['cpu_ms_per_token']:.0f}) | "
            f"{row['longest_pause_ms']:.0f} / {row['longest_pause_ms_max']:.0f} |"
        )
    for pair, metrics in result["paired"].items():
        words, share, common = metrics["grounded_words"], metrics["grounded_share"], metrics["grounded_common"]
        print(
            f"{pair}: grounded words {words['mean']:+.2f} {words['ci']}, share {share['mean']:+.3f} {share['ci']}, "
            f"against every condition's memories {common['mean']:+.2f} {common['ci']}"
        )


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--sets", nargs="+", default=None, help="memory sets (default: every shipped set)")
    parser.add_argument("--model", default=None, help="SMEM_MODEL value (default: the packaged local model)")
    parser.add_argument("--json", type=Path, default=None, help="write the results and every answer here")
    args = parser.parse_args(argv)
    config = print_run_config(args)

    from smem.generation.models import load as load_model
    from smem.memory.embedder import default_embedder

    model, tokenizer = load_model(args.model, None)
    memory = MemorySettings()
    sets = MemorySets(default_embedder(memory.embedder), memory.memories, **memory.pool_options())
    defaults = app_defaults(memory, on_gpu=next(model.parameters()).device.type != "cpu")
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in args.conditions}
    for seed, name in itertools.product(args.seeds, args.sets or sets.names):
        for prompt in sets.examples(name):
            for condition in args.conditions:
                plan = CONDITIONS[condition]
                engine = StreamingEngine(model, tokenizer, sets.pool(name), **plan["engine"])
                options = {**defaults.stream_kwargs(), "seed": seed, "learn": False, **plan["stream"]}
                row = {"seed": seed, "set": name, "prompt": prompt, "condition": condition}
                row.update(answer_once(engine, prompt, options))
                records[condition].append(row)
                print(
                    f"seed {seed} {name} {condition}: {row['grounded_words']} grounded of {row['content_words']} "
                    f"content words, {row['swaps']} swaps, {row['tokens']} tokens, {row['seconds']:.1f}s",
                    flush=True,
                )
    add_common_grounding(records)
    result = {**summarise(records, seed=0), "model": str(getattr(model.config, "name_or_path", "")), "config": config,
              "settings": defaults.stream_kwargs(), "answers": records}
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
