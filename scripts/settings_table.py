"""Rewrites the settings table in README.md from the settings classes (run after adding a setting)."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smem.serving.settings import markdown_table  # noqa: E402

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"

if __name__ == "__main__":
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not block.search(text):
        sys.exit(f"README.md has no {START} … {END} block")
    readme.write_text(block.sub(lambda _: f"{START}\n{markdown_table()}\n{END}", text))
