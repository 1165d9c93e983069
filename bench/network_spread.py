"""How spread out the Hebbian network is, and how much it moves, for each centre pull.

    python bench/network_spread.py [--gravity 0.05 0.2 0.5 1.0]

The tutor set answers its five example prompts and seven short questions (retrieval with
learning, as in the app, five memories each); after each, the network figure is drawn with one
kept layout. Prints, per `viz.GRAVITY`: the median and 10th-percentile gap from each drawn
memory to its nearest neighbour (a knot has small gaps) and the mean distance known memories
moved per answer, both in units of the picture's half-width.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smem.memory.embedder import default_embedder  # noqa: E402
from smem.memory.memory_sets import MemorySets  # noqa: E402
from smem.ui import viz  # noqa: E402

QUESTIONS = ("fractions", "soccer word problems", "frustrated", "Carmen", "quiz next week", "Thursday", "his sister")

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--gravity", type=float, nargs="+", default=[0.05, 0.2, 0.5, 1.0])
args = parser.parse_args()
print(f"settings: {vars(args)}; ITERATIONS={viz.ITERATIONS} MAX_LAID_OUT={viz.MAX_LAID_OUT}")
sets = MemorySets(default_embedder())
qs = [*sets.examples("tutor"), *QUESTIONS]
for g in args.gravity:
    viz.GRAVITY = g
    pool = sets.pool("tutor"); layout = viz.NetworkLayout(); moves = []; prev = {}
    for q in qs:
        hits = pool.retrieve(q, max_memories=5)
        viz.network_figure(pool, layout, [h.id for h in hits])
        pos = dict(layout.positions)
        half = max(max(abs(x), abs(y)) for x, y in pos.values())
        known = [n for n in pos if n in prev]
        if known:
            moves.append(np.mean([np.hypot(pos[n][0]-prev[n][0], pos[n][1]-prev[n][1]) for n in known]) / half)
        prev = pos
    pts = np.array(list(pos.values())); d = np.linalg.norm(pts[:, None]-pts[None], axis=-1); np.fill_diagonal(d, np.inf)
    nn = d.min(1)/np.abs(pts).max()
    print(f"gravity {g}: nodes {len(pts)} median NN gap {np.median(nn):.3f} p10 {np.percentile(nn,10):.3f} mean move {np.mean(moves):.3f}")
