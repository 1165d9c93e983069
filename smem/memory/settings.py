"""Settings of the memory layer: where memories, embeddings and caches live, and how retrieval scores.

One source of truth: `MemoryPool`'s defaults, the README's settings table and the app's defaults
all read these fields. Each field can be set in the environment as `SMEM_<NAME>` (e.g.
`SMEM_DIVERSITY_WEIGHT=0.3`) or, through `smem.serving.settings.Settings`, as a CLI flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_MEMORIES = Path(__file__).resolve().parents[2] / "memories"


class MemorySettings(BaseSettings):
    """The memory library's knobs. Retrieval defaults were tuned on the LoCoMo dev conversations
    (docs/benchmarks.md, "What moves recall")."""

    model_config = SettingsConfigDict(env_prefix="SMEM_", frozen=True, extra="ignore")

    embedder: Optional[str] = Field(
        None, description="sentence-transformers id or folder; unset: the packaged all-MiniLM-L6-v2"
    )
    memories: Path = Field(REPO_MEMORIES, description="folder of memory sets (`*.json` + `*.examples.txt`)")
    cache: Path = Field(
        Path.home() / ".cache" / "smem", description="what smem can rebuild: embeddings, converted models"
    )
    # Measured (docs/benchmarks.md, "Softmax draws"): a draw weighs a memory ∝ score^(1/T), so at
    # 0.05 a memory scoring 10% below another is 8.2× less likely. Sampled draws at 0.05 keep
    # LoCoMo dev recall@5 within 0.007 of argmax (0.646 against 0.653) while 16% of their picks
    # differ from argmax, and the shipped sets' example prompts get 4.6–7.1 different sets in 20
    # draws; 0.15 cost 0.10 of recall@5. The upper bounds here and on association_weight are the
    # ranges the app offers per answer (smem.ui.actions.SETTINGS), so a deployment's default is
    # one a visitor can also pick.
    softmax_temperature: float = Field(
        0.05, gt=0, le=1,
        description="temperature of the memory draw: a memory is drawn with probability ∝ score^(1/T) (lower = sharper)",
    )
    # Chosen, then kept: MMR at 0.5 joined the hybrid similarity in the step that lifted LoCoMo dev
    # recall@10 from 0.552 to 0.676 (docs/benchmarks.md, "Where the gain over cosine comes from").
    diversity_weight: float = Field(
        0.5, ge=0, le=1, description="MMR penalty for memories similar to those already picked"
    )
    # Chosen, not tuned: removing the association term moves recall@10 by 0.000 (docs/benchmarks.md, Ablation).
    association_weight: float = Field(0.5, ge=0, le=2, description="pull of learned query associations (links have their own weight, ScoringWeights.links)")
    # Measured: best recall@10 of the shares tried on LoCoMo dev (docs/benchmarks.md, "Where the gain ...").
    lexical_weight: float = Field(
        0.2, ge=0, lt=1, description="share of normalised BM25 in the similarity (0.2: best recall@10 on LoCoMo dev)"
    )
    # Chosen, not swept: below 20k a float32 pass is a few ms of CPU (brute force 0.25 ms at 1k,
    # 12.7 ms at 100k in docs/benchmarks.md "Retrieval latency"), less than training codes is worth.
    quantized_threshold: int = Field(
        20_000,
        gt=0,
        description="pool size from which candidates come from an 8-bit quantised scan (below: exact float32 scan)",
    )


    def pool_options(self) -> dict[str, Any]:
        """The `MemoryPool` keyword arguments these settings give: what every pool of a
        deployment (`smem.serving.runtime.Runtime`) is built with."""
        return {name: getattr(self, name) for name in POOL_FIELDS}


POOL_FIELDS = ("softmax_temperature", "diversity_weight", "association_weight", "lexical_weight", "quantized_threshold")
"""The fields that are `MemoryPool` arguments (the others say where files live)."""

DEFAULTS = MemorySettings.model_construct()
"""The field defaults, without reading the environment: what a `MemoryPool()` gets unless told otherwise."""
