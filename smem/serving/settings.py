"""All of smem's settings in one object, composed of one settings object per layer.

`Settings()` reads the environment; `Settings.from_cli(argv)` also reads flags such as
`--memory.diversity_weight 0.3` or `--model.model tiny` (flags win over the environment).
`scripts/settings_table.py` renders the README's settings table from these classes, and a test
keeps the two in step, so the table cannot drift from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from smem.generation.settings import ModelSettings
from smem.memory.settings import MemorySettings
from smem.serving.api_schema import ApiSettings


class ServerSettings(BaseSettings):
    """Where `python app.py` listens (Gradio's own variable names, so a Space's settings apply)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    host: str = Field(
        "127.0.0.1", validation_alias=AliasChoices("host", "GRADIO_SERVER_NAME"), description="address to bind"
    )
    port: int = Field(
        7860, gt=0, lt=65536, validation_alias=AliasChoices("port", "GRADIO_SERVER_PORT"), description="port to bind"
    )
    state_dir: Path = Field(
        Path.home() / ".local" / "state" / "smem",
        validation_alias=AliasChoices("state_dir", "SMEM_STATE_DIR"),
        description="durable sessions and visitors' learned state (SQLite); on a Space with persistent storage: `/data`",
    )


class Settings(BaseSettings):
    """Every knob of a deployment: memory library, model, HTTP API limits and server address."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", cli_implicit_flags=True)

    memory: MemorySettings = Field(default_factory=MemorySettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    api: ApiSettings = Field(default_factory=ApiSettings.from_env)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @classmethod
    def from_cli(cls, argv: Optional[Sequence[str]] = None) -> "Settings":
        """The environment, overridden by `--layer.field value` flags in `argv` (default: sys.argv[1:])."""
        return CliApp.run(cls, cli_args=list(argv) if argv is not None else None)

    def as_log(self) -> dict[str, Any]:
        """A JSON-ready dict of every value, printed by the app and every benchmark at start (as nanoGPT logs its config)."""
        return self.model_dump(mode="json")


def _env_name(layer: type[BaseSettings], name: str) -> str:
    field = layer.model_fields[name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1])
    return f"{layer.model_config.get('env_prefix', '')}{name}".upper()


def markdown_table() -> str:
    """The README's settings table: one row per field, rendered from the classes themselves."""
    rows = ["| environment | CLI flag (`python app.py`) | default | what |", "|---|---|---|---|"]
    for layer_name, layer_field in Settings.model_fields.items():
        layer = layer_field.annotation
        for name, field in layer.model_fields.items():
            default = field.get_default(call_default_factory=False)
            if isinstance(default, Path):
                default = "~/" + str(default.relative_to(Path.home())) if default.is_relative_to(Path.home()) else default.name + "/"
            shown = "unset" if default is None else f"`{default}`"
            # A boolean is a flag pair (Settings turns on `cli_implicit_flags`): it takes no value.
            flag = f"`--{layer_name}.{name}`"
            if field.annotation is bool:
                flag += f" / `--no-{layer_name}.{name}`"
            rows.append(f"| `{_env_name(layer, name)}` | {flag} | {shown} | {field.description or ''} |")
    return "\n".join(rows)
