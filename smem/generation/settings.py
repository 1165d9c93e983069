"""Settings of the generation layer: which model runs, in which dtype, on how many threads.

Each field can be set in the environment as `SMEM_<NAME>` (`SMEM_MODEL=tiny`) or, through
`smem.serving.settings.Settings`, as a CLI flag.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseSettings):
    """The model, its weight dtype and its CPU threads."""

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
