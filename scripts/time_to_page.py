"""Time from `python app.py` to a usable page: the UI served and its first figure rendered
in Chromium. Run it once with an empty cache (`--fresh`: the packaged model is converted and
the memory sets embedded) and once more (later starts read both from the cache).

    python scripts/time_to_page.py --fresh      # first start
    python scripts/time_to_page.py              # later starts

Prints the seconds to "page usable", with the machine's load average, because a shared CPU
changes the figure a lot.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import free_port  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="start with an empty SMEM_CACHE")
    parser.add_argument("--model", default="packaged")
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "SMEM_MODEL": args.model, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    cache = tempfile.TemporaryDirectory(prefix="smem-cache-") if args.fresh else None
    if cache:
        env["SMEM_CACHE"] = cache.name
    url = f"http://127.0.0.1:{port}/"
    started = time.monotonic()
    app = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if app.poll() is not None or time.monotonic() - started > args.timeout:
                    raise SystemExit("app.py did not serve")
                time.sleep(0.5)
        served = time.monotonic() - started
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.wait_for_selector("#network .js-plotly-plot", timeout=120_000)
            usable = time.monotonic() - started
            browser.close()
        load = os.getloadavg()[0]
        kind = "first start (empty cache)" if args.fresh else "later start (warm cache)"
        print(f"{kind}, model {args.model}: served after {served:.1f} s, page usable after {usable:.1f} s "
              f"(load average {load:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    finally:
        app.terminate()
        app.wait(30)
        if cache:
            cache.cleanup()


if __name__ == "__main__":
    main()
