"""Weight dtype on a CPU: prompt reading and decoding speed of the packaged model, bf16 vs float32.

`smem.generation.models.choose_dtype` loads float32 on CPUs without native bf16 units and bf16
on CPUs with them (AVX-512 BF16 / AMX). This measures why, on whatever CPU runs it: the same
prompt (the engine's real chat prompt with five memories, cut to `--prompt-tokens`) is read
once into an empty cache (prefill), then `--new-tokens` tokens are decoded greedily one
forward pass at a time, as the engine does. Both dtypes are loaded in one process and run
interleaved for `--rounds` rounds; each keeps its fastest round (a neighbour's burst on a
shared machine should not decide the comparison). Besides wall time it records the process's
CPU time (all threads), which a busy machine inflates far less than wall time: on a shared
CPU compare the CPU-time ratio.

    nice -n 10 python bench/dtype.py                      # 300-token prompt, 16 new tokens, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from transformers import DynamicCache

from smem.generation.models import PACKAGED, choose_dtype, configure_threads, cpu_has_native_bf16, load
from smem.generation.prompt import PromptBuilder
from smem.memory.records import load_memories

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Alex has a timed Algebra I quiz next week. Write me a plan for our next three sessions."


def prompt_ids(tokenizer, length: int) -> list[int]:
    """The engine's prompt with the tutor set's memories in the block, cut to `length` tokens."""
    memories = load_memories(ROOT / "memories" / "tutor.json")
    builder = PromptBuilder(tokenizer, QUESTION)
    block = builder.encode("\n".join(f"- {m.content}" for m in memories))
    ids = [*builder.prefix, *block]
    if len(ids) < length:
        raise SystemExit(f"the prompt has only {len(ids)} tokens; ask for fewer")
    return ids[:length]


def measure(model, ids: list[int], new_tokens: int) -> dict[str, float]:
    """Prefill ms for `ids`, then greedy decode tokens/s over `new_tokens` single-token steps,
    in wall time and in CPU time."""
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        tick, cpu = time.perf_counter(), time.process_time()
        out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        prefill, prefill_cpu = time.perf_counter() - tick, time.process_time() - cpu
        token = int(out.logits[0, -1].argmax())
        tick, cpu = time.perf_counter(), time.process_time()
        for _ in range(new_tokens):
            out = model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True, logits_to_keep=1)
            token = int(out.logits[0, -1].argmax())
        decode, decode_cpu = time.perf_counter() - tick, time.process_time() - cpu
    return {
        "prefill_ms": prefill * 1000,
        "tokens_per_s": new_tokens / decode,
        "prefill_cpu_ms": prefill_cpu * 1000,
        "decode_cpu_ms_per_token": decode_cpu * 1000 / new_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=PACKAGED, help="hub id, local path or 'packaged'")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--prompt-tokens", type=int, default=300, help="issue 8 measured a 300-token prompt")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    threads = configure_threads()
    native = cpu_has_native_bf16()
    settings = {
        **vars(args),
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "native_bf16": native,
        "auto_dtype": str(choose_dtype("cpu", "auto")),
    }
    print("settings:", json.dumps(settings), flush=True)

    loaded = {name: load(args.model, "cpu", dtype=name) for name in args.dtypes}
    ids = prompt_ids(next(iter(loaded.values()))[1], args.prompt_tokens)
    for model, _ in loaded.values():
        measure(model, ids[:16], 2)  # warm-up: allocator growth and kernel selection
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in loaded}
    for round_ in range(args.rounds):
        for name, (model, _) in loaded.items():
            result = measure(model, ids, args.new_tokens)
            rounds[name].append(result)
            print(f"round {round_ + 1} {name}: {json.dumps({k: round(v, 2) for k, v in result.items()})}", flush=True)

    rows = {
        name: {
            "prefill_ms": min(r["prefill_ms"] for r in results),
            "tokens_per_s": max(r["tokens_per_s"] for r in results),
            "prefill_cpu_ms": min(r["prefill_cpu_ms"] for r in results),
            "decode_cpu_ms_per_token": min(r["decode_cpu_ms_per_token"] for r in results),
            "rounds": results,
        }
        for name, results in rounds.items()
    }
    print(
        f"\n| dtype (native bf16: {native}) | prompt read ({args.prompt_tokens} tokens) | decode tokens/s "
        "| prompt read, CPU time | decode, CPU ms/token |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['prefill_ms']:.0f} ms | {row['tokens_per_s']:.2f} "
            f"| {row['prefill_cpu_ms']:.0f} ms | {row['decode_cpu_ms_per_token']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
