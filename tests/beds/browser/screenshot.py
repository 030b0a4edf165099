#!/usr/bin/env python3
"""Photographs Kickstand's status page for the documentation: Debian's
Chromium, headless, driven by Playwright for Python (chromium.py: no
browser download). Used by screenshot.sh, which runs it inside the netboot
bed's namespace.

Usage: screenshot.py BASE_URL OUT.png MAC=PHASE...
Waits until the row of every MAC shows its PHASE (the page polls
/api/status, so this is the page's own view, not the API's) and writes a
full-page PNG 1280 px wide. Exits non-zero with the reason when the page
never shows those phases.
"""
import sys

from playwright.sync_api import TimeoutError as PageTimeout
from playwright.sync_api import sync_playwright

import chromium

WIDTH = 1280


def main():
    base, shot, *rows = sys.argv[1:]
    want = dict(arg.split("=", 1) for arg in rows)
    with sync_playwright() as p:
        browser = chromium.launch(p)
        # The shot is the whole page; the viewport's height is its least.
        page = browser.new_page(viewport={"width": WIDTH, "height": 720}, device_scale_factor=1)
        page.goto(base + "/")
        shown = " && ".join(
            f"document.querySelector(\"#hosts tbody tr[data-mac='{mac}']\")?.dataset.phase === '{phase}'"
            for mac, phase in want.items())
        try:
            page.wait_for_function(shown or "true", timeout=30000)
        except PageTimeout:
            seen = page.evaluate(
                "[...document.querySelectorAll('#hosts tbody tr')].map(r => r.dataset.mac + '=' + r.dataset.phase)")
            print(f"FAIL: the page never showed {want}; it shows {seen}", file=sys.stderr)
            return 1
        page.screenshot(path=shot, full_page=True)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
