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


def test_the_app_and_the_api_carry_the_same_answer_knobs():
    """One list of answer knobs (`smem.generation.engine.ANSWER_KNOBS`), each a keyword of the
    engine's `stream`, carried by the app's settings and by the API's request alike; a knob
    both edges carry but the list leaves out would reach the engine from neither."""
    import inspect
    from dataclasses import fields

    from smem.generation.engine import ANSWER_KNOBS, StreamingEngine
    from smem.serving.api_schema import ApiSettings, chat_request_model
    from smem.ui.actions import GenerationSettings

    keywords = set(inspect.signature(StreamingEngine.stream).parameters)
    request = set(chat_request_model(ApiSettings(), lambda: ["tutor"]).model_fields)
    settings = {item.name for item in fields(GenerationSettings)}
    assert [knob for knob in ANSWER_KNOBS if knob not in keywords & request & settings] == []
    assert (keywords & request & settings) - set(ANSWER_KNOBS) == set()
