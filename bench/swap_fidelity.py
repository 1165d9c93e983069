"""How far splice and slot swaps are from exact swaps: next-token distributions over the same answers.

For each question the engine writes a greedy answer in exact mode (re-retrieval every
`--every` tokens, swaps unrationed), recording the next-token logits it decoded from. The same
tokens and the same memory schedule (which set, from which token) are then replayed:
  * splice, every newcomer's line read - lines tokenised one by one, each swap reading only
    the new lines and sliding what follows by re-rotating its keys
    (`smem.generation.swap.SpliceContext` without a store);
  * splice, line store - the same swaps, a line read before put back from a `LineStore`
    instead of read again (within the answer, the default);
  * splice, store from earlier questions - one store shared by a set's questions in turn, so
    a later answer puts back lines an earlier question's answer read (a session's later
    answers in the app);
  * splice, lines read ahead - every memory's line read before the answers after a frame with
    no conversation (`StreamingEngine.read_ahead`, what the app does at start), the answer's
    own store falling back to it: a swap puts every newcomer back, reading nothing. Alone, or
    in runs of 5 consecutive memories of the set (each line after the ones before it, as in a
    block); and, to tell what the missing conversation costs, alone after the question's own
    prompt (not something the app can do ahead of a question);
  * splice, no swaps - the same layout with the first set kept (the line-by-line
    tokenisation's own difference);
  * slots    - the slot layout, each swap rewriting only the changed slots;
  * slots, no swaps - the slot layout with the first set kept (isolates the layout's own
    difference: padding masked, lines tokenised one by one);
  * once     - exact layout, first set kept throughout (classic retrieve-once RAG): how much
    the swaps change the distribution at all, the scale the slot error should be read against.
For every generated position: KL(exact || variant) in nats and whether the argmax agrees.

    python bench/swap_fidelity.py                    # packaged Qwen2.5-Coder-0.5B, float32, CPU
    python bench/swap_fidelity.py --model tiny --new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LogitsProcessor  # noqa: E402

from smem import MemoryPool, load_memories  # noqa: E402
from smem.generation.engine import StreamingEngine  # noqa: E402
from smem.generation.events import Done, Memories, MemoryUpdate  # noqa: E402
from smem.generation.line_store import LineStore  # noqa: E402
from smem.generation.models import configure_threads, load  # noqa: E402
from smem.generation.prompt import PromptBuilder  # noqa: E402
from smem.generation.swap import ExactContext, SlotContext, SpliceContext, read_ahead  # noqa: E402
from smem.memory.embedder import default_embedder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = {
    "tutor": [
        "Alex has a timed Algebra I quiz next week. Write a plan for our next three sessions.",
        "What should I keep in mind about how Alex handles frustration, and which examples work for him?",
    ],
    "family": [
        "Plan a birthday weekend for the family that everyone would enjoy.",
        "What should I remember about everyone's health and diet when cooking for the family?",
    ],
}


class Capture(LogitsProcessor):
    """Keeps the logits each greedy step was decoded from."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.rows.append(scores[0].detach().clone())
        return scores


def replay(context: Any, tokens: list[int], schedule: dict[int, list], stop: torch.Tensor) -> list[torch.Tensor]:
    """Logits before each of `tokens` when `context` reads them with the given swaps
    (`schedule[n]`: the set in context from generated token n on)."""
    rows = [context.prefill()]
    for count, token in enumerate(tokens[:-1], start=1):
        if count in schedule:
            context.swap(schedule[count], tokens[: count - 1])
        rows.append(context.step(token))
    return [row.index_fill(0, stop, float("-inf")) for row in rows]


def compare(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict[str, Any]:
    p = torch.log_softmax(torch.stack(reference), dim=-1)
    q = torch.log_softmax(torch.stack(other), dim=-1)
    finite = torch.isfinite(p)
    kl = torch.where(finite, p.exp() * (p - q), torch.zeros_like(p)).sum(-1)
    agree = (p.argmax(-1) == q.argmax(-1)).float()
    return {"kl": kl.tolist(), "agree": agree.tolist()}


def summary(values: list[float]) -> str:
    array = np.asarray(values)
    return f"{array.mean():.4f} (median {np.median(array):.4f}, p90 {np.percentile(array, 90):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="packaged")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16 (CPU without native bf16: float32)")
    parser.add_argument("--sets", nargs="+", default=["tutor", "family"])
    parser.add_argument("--questions", type=int, default=1, help="questions per set")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--every", type=int, default=1, help="update_every_n")
    parser.add_argument("--slot-tokens", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    configure_threads()
    model, tokenizer = load(args.model, "cpu")
    model = model.to(getattr(torch, args.dtype))
    results: dict[str, dict[str, list[float]]] = {}
    answers = []
    for name in args.sets:
        pool = MemoryPool(embedder=default_embedder(), seed=0)
        pool.add_many(load_memories(ROOT / "memories" / f"{name}.json"))
        slot_tokens = {"slot_tokens": args.slot_tokens} if args.slot_tokens else {}
        engine = StreamingEngine(model, tokenizer, pool, swap="exact", swap_budget=None, **slot_tokens)
        stop = torch.tensor(sorted(engine.stop_ids))
        shared = LineStore()
        ahead, runs = LineStore(max_lines=len(pool)), LineStore(max_lines=len(pool))
        engine.read_ahead(ahead, run_lines=1)
        engine.read_ahead(runs, run_lines=5)
        for question in QUESTIONS[name][: args.questions]:
            tick = time.perf_counter()
            capture = Capture()
            events = list(
                engine.stream(
                    question,
                    update_every_n=args.every,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    temperature=0.0,
                    learn=False,
                    logits_processor=[capture],
                )
            )
            done = events[-1]
            assert isinstance(done, Done)
            first = events[0].memories if isinstance(events[0], Memories) else []
            schedule = {e.at_token: e.memories for e in events if isinstance(e, MemoryUpdate)}
            tokens = [int(row.argmax()) for row in capture.rows]
            builder = PromptBuilder(tokenizer, question, system_prompt=engine.system_prompt)
            exact = [row.index_fill(0, stop, float("-inf")) for row in capture.rows]

            asked = LineStore(max_lines=len(pool))
            read_ahead(engine._forward, builder, pool.memories, asked, model.config, run_lines=1)

            def slots(hits):
                return SlotContext(
                    engine._forward,
                    builder,
                    hits,
                    model.config,
                    slots=5,
                    slot_tokens=engine.slot_tokens,
                    max_new_tokens=len(tokens),
                    device=engine.device,
                )

            def splice(hits, store=None):
                return SpliceContext(engine._forward, builder, hits, model.config, rotation=engine.rotation, store=store)

            variants = {
                "splice, every newcomer's line read": replay(splice(first), tokens, schedule, stop),
                "splice, line store": replay(splice(first, LineStore()), tokens, schedule, stop),
                "splice, store from earlier questions": replay(splice(first, shared), tokens, schedule, stop),
                "splice, lines read ahead alone": replay(splice(first, LineStore(fallback=ahead)), tokens, schedule, stop),
                "splice, lines read ahead in runs of 5": replay(splice(first, LineStore(fallback=runs)), tokens, schedule, stop),
                "splice, lines read ahead alone after the question": replay(splice(first, LineStore(fallback=asked)), tokens, schedule, stop),
                "splice, no swaps": replay(splice(first), tokens, {}, stop),
                "slots": replay(slots(first), tokens, schedule, stop),
                "slots, no swaps": replay(slots(first), tokens, {}, stop),
                "once (no swaps, exact layout)": replay(ExactContext(engine._forward, builder, first, model.config), tokens, {}, stop),
            }
            for label, rows in variants.items():
                measured = compare(exact, rows)
                bucket = results.setdefault(label, {"kl": [], "agree": []})
                bucket["kl"] += measured["kl"]
                bucket["agree"] += measured["agree"]
            answers.append({"set": name, "question": question, "tokens": len(tokens), "swaps": len(schedule)})
            print(
                f"{name}: {len(tokens)} tokens, {len(schedule)} swaps, {time.perf_counter() - tick:.0f} s: "
                + "; ".join(
                    f"{label} KL {np.mean(compare(exact, rows)['kl']):.4f} top-1 {np.mean(compare(exact, rows)['agree']):.3f}"
                    for label, rows in variants.items()
                ),
                flush=True,
            )
    swaps = sum(a["swaps"] for a in answers)
    tokens = sum(a["tokens"] for a in answers)
    print()
    print(
        f"{len(answers)} answers, {tokens} positions, {swaps} exact swaps ({100 * swaps / max(tokens, 1):.1f} per 100 "
        f"tokens), update_every_n={args.every}, slot length {engine.slot_tokens}"
    )
    print("| against exact | KL(exact ‖ variant), nats: mean (median, p90) | top-1 agreement |")
    print("|---|---|---:|")
    for label, bucket in results.items():
        print(f"| {label} | {summary(bucket['kl'])} | {np.mean(bucket['agree']):.3f} |")
    print(f"model: {args.model} ({args.dtype}); machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}")
    if args.json:
        Path(args.json).write_text(json.dumps({"answers": answers, "results": results}, indent=2))


if __name__ == "__main__":
    main()
