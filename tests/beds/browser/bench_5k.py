#!/usr/bin/env python3
"""Times Kickstand's status page in Debian's Chromium, headless (Playwright
for Python, chromium.py: no browser download). Used by bench-5k.sh.

Usage: bench_5k.py BASE_URL RUNS
Each run opens the page in a fresh browser context (nothing cached) and
reads the `kickstand-hosts-painted` mark status.js sets in the frame that
first paints the hosts table: milliseconds from the start of navigation.
It also times one redraw of the hosts table as each poll makes it
(status.js's renderHosts, then the layout it causes). Prints one line per
run, then the medians. A figure, never a pass/fail.
"""
import statistics
import sys

from playwright.sync_api import sync_playwright

import chromium

MARK = "kickstand-hosts-painted"
REDRAW = """() => {
  const t = performance.now();
  renderHosts();
  document.body.offsetHeight;
  return performance.now() - t;
}"""


def main():
    base, runs = sys.argv[1], int(sys.argv[2])
    times, redraws = [], []
    with sync_playwright() as p:
        browser = chromium.launch(p)
        for run in range(runs):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(base + "/")
            page.wait_for_function(f"performance.getEntriesByName('{MARK}').length > 0",
                                   timeout=60000)
            ms = page.evaluate(f"performance.getEntriesByName('{MARK}')[0].startTime")
            rows = page.locator("#hosts tbody tr").count()
            shown = page.locator("#host-range").text_content()
            redraw = page.evaluate(REDRAW)
            print(f"run {run + 1}: table painted {ms:.0f} ms after navigation "
                  f"({rows} rows, {shown}); a redraw {redraw:.1f} ms")
            times.append(ms)
            redraws.append(redraw)
            context.close()
        browser.close()
    print(f"median of {runs}: table painted {statistics.median(times):.0f} ms after navigation; "
          f"a redraw {statistics.median(redraws):.1f} ms")


if __name__ == "__main__":
    main()
