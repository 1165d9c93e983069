"""What every benchmark prints first: its arguments and every setting in force (as nanoGPT logs its config)."""

from __future__ import annotations

import argparse
import json
import platform

import torch

from smem.serving.settings import Settings


def cpu_kind() -> str:
    """'native bf16' where the CPU computes bf16 in hardware (AVX-512 BF16 / AMX), else 'AVX2-class, no native bf16'."""
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "native bf16 (AVX-512 BF16/AMX)" if native else "AVX2-class, no native bf16"


def print_run_config(args: argparse.Namespace) -> dict:
    """Print and return the run's configuration: CLI arguments, smem settings, CPU kind."""
    config = {
        "args": vars(args),
        "settings": Settings().as_log(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_kind": cpu_kind(),
            # The kernels torch runs, which ATEN_CPU_CAPABILITY can lower (AVX2 code on an AVX-512 CPU).
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
    }
    print("config:", json.dumps(config, default=str), flush=True)
    return config
