"""The package's layers import downward only: ui → serving → generation → memory."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "smem"
LAYERS = ["memory", "generation", "serving", "ui"]  # lowest first


def imported_smem_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("smem"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smem"):
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_itself_and_layers_below(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    offenders = []
    for path in sorted((PACKAGE / layer).glob("*.py")):
        for name in imported_smem_modules(path):
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target in LAYERS and target not in allowed:
                offenders.append(f"{path.name} imports {name}")
    assert offenders == []


def test_every_module_lives_in_a_layer():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == []


def test_memory_layer_pulls_in_no_web_or_plotting_framework():
    code = (
        "import sys\n"
        "from smem import MemoryPool, load_memories\n"
        "import smem.memory.pool, smem.memory.memory_sets, smem.memory.embedder\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'gradio', 'fastapi', 'plotly', 'starlette'})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
