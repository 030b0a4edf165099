#!/usr/bin/env python3
"""Reads what Kickstand's status page says of its segment, as an operator
sees it: Debian's Chromium, headless (chromium.py), the appliance card's
"segment" line once the page has drawn it. Used by the standby tests.

Usage: segment_card.py BASE_URL
Prints the line; exits non-zero with the reason when the page never shows
one (or its script failed).
"""
import sys

from playwright.sync_api import TimeoutError as PageTimeout
from playwright.sync_api import sync_playwright

import chromium

SEGMENT = """() => {
  const dt = [...document.querySelectorAll('#card-appliance dt')].find(d => d.textContent === 'segment');
  return dt ? dt.nextElementSibling.textContent : null;
}"""


def main():
    base = sys.argv[1]
    errors = []
    with sync_playwright() as p:
        browser = chromium.launch(p)
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        try:
            page.wait_for_function(f"({SEGMENT})() !== null", timeout=30000)
        except PageTimeout:
            print(f"FAIL: no segment line on the page; script errors: {errors}", file=sys.stderr)
            return 1
        print(page.evaluate(SEGMENT))
        browser.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
