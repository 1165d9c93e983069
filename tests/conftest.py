"""Shared fixtures. Everything runs offline: no hub, no telemetry."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Sessions the tests create go to a throwaway folder, never the user's state directory.
os.environ.setdefault("SMEM_STATE_DIR", __import__("tempfile").mkdtemp(prefix="smem-test-state-"))

import hashlib

import numpy as np
import pytest


class KeyedEmbedder:
    """Deterministic embedder for unit tests: a text's vector is either given explicitly
    or derived from its hash, so tests control geometry exactly."""

    name = "keyed-test"

    def __init__(self, dim: int = 16, vectors: dict[str, np.ndarray] | None = None) -> None:
        self.dim = dim
        self.vectors = {text: np.asarray(v, dtype=np.float32) for text, v in (vectors or {}).items()}
        self.calls = 0

    def vector(self, text: str) -> np.ndarray:
        if text in self.vectors:
            v = self.vectors[text]
        else:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


# Where the tiny model of the engine tests runs: the CPU, unless $SMEM_TEST_DEVICE names another
# ("cuda" on a machine with a GPU), so the same tests check the Space's own path where one is
# lent. CI has no GPU and leaves it unset.
TEST_DEVICE = os.environ.get("SMEM_TEST_DEVICE", "cpu")


def build_tiny(seed: int = 0):
    """`tiny.build(seed)` on the test device."""
    from smem.generation import tiny

    return tiny.build(seed=seed, device=TEST_DEVICE)


@pytest.fixture
def keyed() -> type[KeyedEmbedder]:
    return KeyedEmbedder


@pytest.fixture(scope="session")
def minilm():
    """The packaged offline all-MiniLM-L6-v2 (loads in a few seconds, once per session)."""
    from smem.memory.embedder import default_embedder

    return default_embedder()


@pytest.fixture(scope="session")
def tiny_runtime(minilm):
    """A serving runtime on the tiny in-process model: what the HTTP API tests run against."""
    from smem.generation import tiny
    from smem.memory.memory_sets import MemorySets
    from smem.serving.runtime import Runtime

    from smem.generation.prompt import MemoryLineTokens

    model, tokenizer = tiny.build(seed=0)
    line_tokens = MemoryLineTokens(tokenizer)
    sets = MemorySets(minilm, token_counter=line_tokens)
    return Runtime(model=model, tokenizer=tokenizer, embedder=minilm, sets=sets, model_name="tiny", line_tokens=line_tokens)


# -- the app (app.py) as a subprocess: tests/test_app.py, test_browser.py ------------------------

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def api_server(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """`python -m smem.serving.api` on the tiny model with `env` over ours; yields its URL, its
    process and the seconds until `/health` answered, and stops it (if a test has not) on exit."""
    port = free_port()
    command = [sys.executable, "-m", "smem.serving.api", "--model", "tiny", "--port", str(port), "--log-level", "warning"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            assert process.poll() is None, process.stdout.read().decode(errors="replace") if process.stdout else "server exited"
            assert time.monotonic() < deadline, "the API server did not come up in 180 s"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield url, process, time.perf_counter() - started
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen
    log: Path
    uploads: Path
    """Gradio's cache folder for this app (GRADIO_TEMP_DIR), where uploads land."""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def run_app(log_dir: Path, timeout_s: float = 120.0, args: Sequence[str] = (), **env: str) -> Iterator[AppServer]:
    """Start `python app.py *args` on a free loopback port (tiny model unless `SMEM_MODEL` is
    given), wait until it serves, and always stop it (its own process group, by id)."""
    port = free_port()
    log = log_dir / f"app-{port}.log"
    environment = {
        **os.environ,
        "SMEM_MODEL": "tiny",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(log_dir / f"gradio-{port}"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "app.py", *args], cwd=REPO, env=environment, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = AppServer(f"http://127.0.0.1:{port}", process, log, Path(environment["GRADIO_TEMP_DIR"]))
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url + "/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not serve within {timeout_s:.0f} s:\n{server.log_tail()}")
            time.sleep(0.3)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> Iterator[AppServer]:
    """One app on the tiny model, shared by the gradio_client and browser tests (each test
    is its own visitor, so they do not see each other's state)."""
    with run_app(tmp_path_factory.mktemp("app")) as server:
        yield server


@pytest.fixture(scope="session")
def test_output() -> Path:
    """Screenshots and other artefacts a person may want to look at after a run."""
    folder = REPO / "test-output"
    folder.mkdir(exist_ok=True)
    return folder
