"""Record one full answer for the app's cached example (assets/example-run.json).

    python scripts/record_example.py                 # the packaged offline model, CPU
    SMEM_MODEL=Qwen/Qwen3-8B python scripts/record_example.py --device cuda

The run uses the default memory set and its first example prompt, greedy, so a re-recording
with the same model gives the same story. The app replays it at once (smem.ui.recorded).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smem.generation import models  # noqa: E402
from smem.serving.runtime import Runtime  # noqa: E402
from smem.ui import recorded  # noqa: E402
from smem.ui.actions import GenerationSettings, answer  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "assets" / "example-run.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    model_id = models.resolve_model_id(None, args.device)
    runtime = Runtime.load(model_id, device=args.device)
    name = runtime.sets.default
    message = runtime.sets.examples(name)[0]
    # Swaps every 5 tokens and greedy decoding: a short answer that still shows several swaps.
    # Greedy tokens and the top-scoring memories (no softmax draw), so a re-recording with the
    # same model tells the same story. Exact swaps: in the slot layout the packaged 0.5B model
    # answers this prompt "Please provide me with the user's message" (docs/benchmarks.md,
    # "Swap modes"), so the showcase is recorded in the reference mode, and says so.
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        update_every_n=5,
        temperature=0.0,
        enable_thinking=runtime.can_think,
        sample_memories=False,
        swap="exact",
    )
    print(f"settings: {settings}")
    events = list(answer(runtime.engine(runtime.sets.pool(name)), message, [], settings))
    meta = {"model": runtime.model_name, "memory_set": name, "message": message, "settings": settings.__dict__}
    recorded.save(args.out, meta, events)
    print(f"{args.out}: {len(events)} events, {events[-1].stats.tokens} tokens, {events[-1].stats.swaps} swaps")


if __name__ == "__main__":
    main()
