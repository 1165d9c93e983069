"""One settings object per layer, composed into `Settings`, read from the environment and CLI flags."""

import inspect
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from smem import MemoryPool
from smem.memory.settings import DEFAULTS, MemorySettings
from smem.serving.api_schema import ApiSettings
from smem.serving.settings import Settings, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_environment_sets_each_layer(monkeypatch):
    monkeypatch.setenv("SMEM_DIVERSITY_WEIGHT", "0.25")
    monkeypatch.setenv("SMEM_MODEL", "tiny")
    monkeypatch.setenv("SMEM_API_MAX_QUEUE", "3")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7001")
    settings = Settings()
    assert settings.memory.diversity_weight == 0.25
    assert settings.model.model == "tiny"
    assert settings.api.max_queue == 3
    assert settings.server.port == 7001


def test_environment_and_flags_reach_every_pool_the_runtime_hands_out(monkeypatch, minilm):
    """The retrieval knobs are not only parsed: the pools the app and the API answer from use them."""
    from smem.serving.runtime import Runtime

    monkeypatch.setenv("SMEM_DIVERSITY_WEIGHT", "0.25")
    monkeypatch.setenv("SMEM_LEXICAL_WEIGHT", "0.1")
    from_env = Runtime.load("tiny", embedder=minilm)
    pool = from_env.sets.pool(from_env.sets.default)
    assert (pool.diversity_weight, pool.lexical_weight, pool.softmax_temperature) == (0.25, 0.1, DEFAULTS.softmax_temperature)

    flags = Settings.from_cli(["--memory.diversity_weight", "0.75", "--memory.softmax_temperature", "0.4"])
    from_flags = Runtime.load("tiny", embedder=minilm, memory=flags.memory)
    pool = from_flags.sets.pool(from_flags.sets.default)
    assert (pool.diversity_weight, pool.lexical_weight, pool.softmax_temperature) == (0.75, 0.1, 0.4)


def test_cli_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("SMEM_DIVERSITY_WEIGHT", "0.25")
    settings = Settings.from_cli(["--memory.diversity_weight", "0.75", "--api.max_queue_per_client", "9"])
    assert settings.memory.diversity_weight == 0.75
    assert settings.api.max_queue_per_client == 9


def test_a_boolean_is_the_flag_pair_the_settings_table_shows(monkeypatch):
    monkeypatch.delenv("SMEM_READ_AHEAD", raising=False)
    assert "`--model.read_ahead` / `--no-model.read_ahead`" in markdown_table()
    assert Settings.from_cli(["--no-model.read_ahead"]).model.read_ahead is False
    monkeypatch.setenv("SMEM_READ_AHEAD", "0")
    assert Settings.from_cli(["--model.read_ahead"]).model.read_ahead is True


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("SMEM_DIVERSITY_WEIGHT", "1.5", "diversity_weight"),
        ("SMEM_API_MAX_QUEUE", "0", "max_queue"),
        ("SMEM_READ_AHEAD", "maybe", "read_ahead"),
    ],
)
def test_an_out_of_range_value_is_refused_naming_the_field(monkeypatch, variable, value, field):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_the_pool_defaults_are_the_settings_defaults():
    parameters = inspect.signature(MemoryPool).parameters
    for name in ("softmax_temperature", "diversity_weight", "association_weight", "lexical_weight", "quantized_threshold"):
        assert parameters[name].default == MemorySettings.model_fields[name].default == getattr(DEFAULTS, name)


def test_api_limits_from_a_mapping():
    assert ApiSettings.from_env({"SMEM_API_SESSION_TTL_S": "7"}).session_ttl_s == 7


def test_readme_table_is_rendered_from_the_classes():
    text = README.read_text()
    match = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.S)
    assert match, "README.md lacks the settings table block"
    assert match.group(1) == markdown_table(), "run `python scripts/settings_table.py`"


def test_app_flags_reach_the_model_the_pools_and_the_sliders(tmp_path):
    """`python app.py --model.* --memory.*`: read before the model loads, so they count."""
    import json
    import urllib.request

    from conftest import run_app

    flags = ["--model.threads", "1", "--memory.diversity_weight", "0.3", "--api.max_queue", "7"]
    with run_app(tmp_path, args=flags) as server:
        with urllib.request.urlopen(server.url + "/config", timeout=30) as response:
            config = json.load(response)
        log = server.log.read_text(errors="replace")
    assert "using 1 CPU thread(s)" in log, log[-2000:]
    logged = json.loads(next(line for line in log.splitlines() if " settings: " in line).split(" settings: ", 1)[1])
    assert logged["memory"]["diversity_weight"] == 0.3 and logged["api"]["max_queue"] == 7
    slider = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "knob-diversity-weight")
    assert slider["props"]["value"] == 0.3, "the app's slider starts at the flag's value"
