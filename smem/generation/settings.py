"""Settings of the generation layer: which model runs, in which dtype, on how many threads, and
whether memory lines are read ahead.

Each field can be set in the environment as `SMEM_<NAME>` (`SMEM_MODEL=tiny`) or, through
`smem.serving.settings.Settings`, as a CLI flag.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseSettings):
    """The model, its weight dtype, its CPU threads and the memory lines it reads ahead."""

    model_config = SettingsConfigDict(env_prefix="SMEM_", frozen=True, extra="ignore")

    model: Optional[str] = Field(
        None,
        description="hub id, local folder, `packaged` (offline default), a packaged model's name "
        "(`qwen2.5-coder-1.5b-instruct`) or `tiny` (random, for the UI); "
        "unset: Qwen/Qwen3-8B on CUDA, the packaged model elsewhere",
    )
    threads: Optional[int] = Field(None, gt=0, description="torch CPU threads; unset: one per usable core")
    dtype: str = Field(
        "auto",
        description="weight dtype: `auto` (bf16 on a GPU or a CPU with native bf16 (AVX-512 BF16 / AMX), "
        "float32 on other CPUs, where emulated bf16 reads prompts and swaps memories ~7x slower), `bf16`, `fp16` or `fp32`",
    )
    read_ahead: bool = Field(
        True,
        description="read every memory line of the shipped sets in the background at start (splice swaps on a "
        "CPU then put lines back instead of reading them: ~1.2x plain decoding at update_every_n=1 instead of "
        "~1.4-1.5x; ~2 min of CPU and ~270 MB for the packaged model); ignored where swaps are exact (GPU)",
    )
