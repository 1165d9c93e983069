"""Screenshots of the app for the README and the issue, taken in Chromium as a visitor sees it.

    python scripts/screenshots.py [--url http://127.0.0.1:7860] [--out assets]

Drives a running app (start it with `python app.py`, or `SMEM_MODEL=tiny python app.py` for a
fast one) at 1440×900: the page loaded, the recorded example replayed, mid-answer, after the
answer, the network after three answers, the set switched away and back, and the page
reloaded (what the visitor taught comes back). Uses Debian's chromium through playwright
(playwright's own browser download does not work offline); the app's icons are emoji, so install
Debian's `fonts-noto-color-emoji` too, or they show as empty boxes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
QUESTIONS = (
    "Can you help me plan Thursday's algebra session with Alex?",
    "What usually helps Alex when he gets frustrated?",
    "How should I explain fractions to him?",
)
VIEWPORT = {"width": 1440, "height": 900}


def status(page: Page) -> str:
    return page.inner_text("#status")


def send(page: Page, text: str) -> None:
    page.fill("#message textarea", text)
    page.click("#send")


def wait_done(page: Page, timeout_ms: int = 300_000) -> None:
    page.wait_for_function(
        "() => /done|stopped/.test(document.querySelector('#status').innerText)", timeout=timeout_ms
    )


def shoot(page: Page, out: Path, name: str) -> Path:
    path = out / name
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path))
    print(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="set the answers' length first (a CPU model writes slowly)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(args.url + "/")
        page.wait_for_selector("#message textarea", timeout=120_000)
        page.wait_for_selector("#network .js-plotly-plot", timeout=60_000)
        shoot(page, args.out, "screenshot-loaded.png")
        if page.locator("#recorded").count():
            page.locator("#recorded button, #recorded td, #recorded .example").first.click()
            page.wait_for_function("() => document.querySelector('#status').innerText.includes('recorded')")
            page.wait_for_timeout(1000)
            shoot(page, args.out, "screenshot-recorded.png")

        if args.max_new_tokens:
            page.get_by_role("tab", name="Settings").click()
            page.fill("#knob-max-new-tokens input[type=number]", str(args.max_new_tokens))
            page.press("#knob-max-new-tokens input[type=number]", "Enter")
            page.get_by_role("tab", name="Timeline and tokens").click()
        send(page, QUESTIONS[0])
        page.wait_for_function(
            "() => Number((document.querySelector('#status').innerText.match(/(?:answering|thinking)\\D*(\\d+) tokens/)"
            " || [0, 0])[1]) >= 40",
            timeout=300_000,
        )
        shoot(page, args.out, "screenshot-mid-answer.png")
        wait_done(page)
        shoot(page, args.out, "screenshot-answered.png")

        for question in QUESTIONS[1:]:
            send(page, question)
            page.wait_for_timeout(500)
            wait_done(page)
        page.locator("#network").scroll_into_view_if_needed()
        page.locator("#network").screenshot(path=str(args.out / "screenshot-network.png"))
        print(args.out / "screenshot-network.png")

        page.get_by_label("Memory set").first.click()
        page.get_by_role("option", name="family").click()
        page.wait_for_function("() => document.querySelector('#set-status').innerText.includes('family')")
        shoot(page, args.out, "screenshot-switched.png")
        page.get_by_label("Memory set").first.click()
        page.get_by_role("option", name="tutor").click()
        page.wait_for_function("() => document.querySelector('#set-status').innerText.includes('tutor')")
        page.wait_for_timeout(1000)
        shoot(page, args.out, "screenshot-switched-back.png")
        page.reload()
        page.wait_for_function("() => (document.querySelector('#set-status')?.innerText || '').includes('Welcome back')")
        page.wait_for_timeout(1000)
        shoot(page, args.out, "screenshot-reloaded.png")
        browser.close()


if __name__ == "__main__":
    main()
