#!/usr/bin/env python3
"""Drives Kickstand's status page in Debian's Chromium, headless, with
Playwright for Python (chromium.py: executable_path points at
/usr/bin/chromium, no browser download). Used by crates/daemon/tests/status_page.rs.

Usage: status_page.py HTTPS_BASE_URL SCREENSHOT.png CHECKS.json
CHECKS.json:
  {"hosts": N, "rows": {"<mac>": "<phase>", ...},
   "change": {"mac": "<mac>", "phase": "<phase after>", "then": "<file the test
              touches when the page shows its first state>"},
   "certificate": "<the appliance's PEM certificate: Chromium trusts its key>",
   "plain_base": "http://..." (optional: the page there is read-only and
                 links to HTTPS),
   "operator_token": "..." (optional: checks that actions appear),
   "rearm": "<mac>" (optional, with the token: re-arms it from the page and
            finds the action in the audit panel),
   "power": {"mac": "<mac>", "state": "on|off"} (optional, with the token:
            its power column shows the state its BMC was polled in; its
            "cycle → PXE" button, confirmed, power cycles it and the action
            shows in the audit panel),
   "paging": {"filter": "<a hostname>", "mac": "<its mac>",
              "last": "<the hostname that sorts last>"} (optional, for a
            rack of more than one page: the range reads "1–100 of N", sorting
            by hostname descending puts "last" first, "next" moves on a
            page, filtering for "filter" leaves its row alone, and a poll
            keeps the sort, the page, the filter and the selected row)}
Prints one JSON line of what it measured (load time, polls; with "paging",
the most rows the table held) on success;
exits non-zero with the reason otherwise.
"""
import json
import os
import sys
import time

from playwright.sync_api import sync_playwright

import chromium

base, shot, checks_path = sys.argv[1], sys.argv[2], sys.argv[3]
checks = json.load(open(checks_path))


PAGE_ROWS = 100  # status.js's PAGE_ROWS


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def text(page, selector):
    return page.locator(selector).text_content()


def first_row(page):
    row = page.locator("#hosts tbody tr").first
    return row.get_attribute("data-mac"), row.locator("td").first.text_content()


def next_poll(page):
    """Waits for the page's next poll to have redrawn it."""
    polls = int(page.evaluate("document.body.dataset.polls"))
    page.wait_for_function(f"Number(document.body.dataset.polls) > {polls}", timeout=30000)


def settles(page, check, what, timeout=10):
    """Waits until `check()` holds: each change of sort, page or filter asks
    the appliance for that page, and the table follows its answer. Fails
    with `what()` if it never does."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            fail(what())
        page.wait_for_timeout(50)


def check_paging(page, n, paging):
    """A rack of more than one page: sort, page, filter and select, and a
    poll keeps each of them. Returns the number of rows seen in the DOM at
    most."""
    most = page.locator("#hosts tbody tr").count()
    if text(page, "#host-range") != f"1–{PAGE_ROWS} of {n}":
        fail("the first page reads " + text(page, "#host-range"))
    page.click("#hosts th[data-key='hostname']")
    page.click("#hosts th[data-key='hostname']")
    if page.get_attribute("#hosts th[data-key='hostname']", "aria-sort") != "descending":
        fail("two clicks on Host do not sort it descending")
    settles(page, lambda: first_row(page)[1] == paging["last"],
            lambda: f"sorted by hostname descending, {first_row(page)[1]} comes first, not {paging['last']}")
    top = first_row(page)
    page.click("#host-next")
    second_range = f"{PAGE_ROWS + 1}–{2 * PAGE_ROWS} of {n}"
    settles(page, lambda: text(page, "#host-range") == second_range and first_row(page) != top,
            lambda: f"next page reads {text(page, '#host-range')}, first {first_row(page)}")
    second = first_row(page)
    most = max(most, page.locator("#hosts tbody tr").count())
    next_poll(page)
    if (text(page, "#host-range") != second_range
            or first_row(page) != second
            or page.get_attribute("#hosts th[data-key='hostname']", "aria-sort") != "descending"):
        fail(f"a poll lost the page or the sort: {text(page, '#host-range')}, first {first_row(page)}")
    page.fill("#host-filter", paging["filter"])
    rows = page.locator("#hosts tbody tr")
    settles(page, lambda: rows.count() == 1 and rows.first.get_attribute("data-mac") == paging["mac"]
            and text(page, "#host-range") == "1–1 of 1",
            lambda: f"filtering for {paging['filter']} leaves {rows.count()} row(s), {text(page, '#host-range')}")
    rows.first.click()
    page.wait_for_selector("#detail:not([hidden])", timeout=10000)
    next_poll(page)
    rows = page.locator("#hosts tbody tr")
    if (page.input_value("#host-filter") != paging["filter"] or rows.count() != 1
            or "selected" not in (rows.first.get_attribute("class") or "")):
        fail("a poll lost the filter or the selected row")
    page.fill("#host-filter", "")
    settles(page, lambda: text(page, "#host-range") == f"1–{PAGE_ROWS} of {n}",
            lambda: "with the filter cleared the range reads " + text(page, "#host-range"))
    return max(most, page.locator("#hosts tbody tr").count())


with sync_playwright() as p:
    # No network but the appliance's: the page must need nothing else.
    browser = chromium.launch(p, [chromium.trust_spki(checks["certificate"])])
    if "plain_base" in checks:
        # Over plain HTTP: the rack, read-only, and the way to HTTPS.
        plain = browser.new_page()
        plain.goto(checks["plain_base"] + "/")
        plain.wait_for_function(
            "document.getElementById('https-link').textContent.startsWith('https://')",
            timeout=30000)
        if plain.locator("#operator").is_visible():
            fail("the operator token form shows over plain HTTP")
        plain.close()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) else None)
    started = time.monotonic()
    page.goto(base + "/")
    # One page of rows at most; the range names the whole rack.
    page.wait_for_function(
        f"document.querySelectorAll('#hosts tbody tr').length === {min(checks['hosts'], PAGE_ROWS)}"
        f" && document.getElementById('host-range').textContent.endsWith(' of {checks['hosts']}')",
        timeout=30000)
    loaded = time.monotonic() - started
    for mac, phase in checks["rows"].items():
        row = page.locator(f"#hosts tbody tr[data-mac='{mac}']")
        if row.count() != 1:
            fail(f"no row for {mac}")
        got = row.get_attribute("data-phase")
        if got != phase:
            fail(f"{mac} shows {got}, want {phase}")
    # The page changes without a reload: mark this document, let the test
    # change the host through the API, and wait for the row.
    page.evaluate("window.__kickstand_marker = 'same page'")
    change = checks["change"]
    open(change["then"], "w").close()
    page.wait_for_function(
        f"document.querySelector(\"#hosts tbody tr[data-mac='{change['mac']}']\")"
        f"?.dataset.phase === '{change['phase']}'",
        timeout=30000)
    if page.evaluate("window.__kickstand_marker") != "same page":
        fail("the page reloaded to show the change")
    polls = int(page.evaluate("document.body.dataset.polls"))
    # Read-only without the operator token; actions enabled with it.
    rearm = page.locator("#hosts button", has_text="re-arm")
    if rearm.count() and rearm.first.is_enabled():
        fail("re-arm is enabled without the operator token")
    if "operator_token" in checks:
        page.fill("#token", checks["operator_token"])
        page.click("#operator button")
        page.wait_for_function("document.getElementById('mode').textContent === 'operator'")
        page.wait_for_function(
            "[...document.querySelectorAll('#hosts button')].some(b => !b.disabled)", timeout=10000)
        if "rearm" in checks:
            mac = checks["rearm"]
            page.on("dialog", lambda d: d.accept())
            page.click(f"#hosts tbody tr[data-mac='{mac}'] button")
            page.wait_for_function(
                f"document.querySelector(\"#hosts tbody tr[data-mac='{mac}']\")"
                f"?.dataset.phase === 'rearmed'", timeout=10000)
            page.wait_for_function(
                f"[...document.querySelectorAll('#audit tbody tr[data-action=rearm]')]"
                f".some(r => r.textContent.includes('{mac}'))", timeout=10000)
        if "power" in checks:
            mac, state = checks["power"]["mac"], checks["power"]["state"]
            row = f"#hosts tbody tr[data-mac='{mac}']"
            page.wait_for_selector(f"{row} .power-{state}", timeout=30000)
            if "rearm" not in checks:
                page.on("dialog", lambda d: d.accept())
            page.click(f"{row} button[data-power=cycle]")
            page.wait_for_function(
                "[...document.querySelectorAll('#audit tbody tr[data-action=power-cycle]')]"
                f".some(r => r.textContent.includes('{mac}'))", timeout=30000)
    # Sorting by phase puts failed hosts first.
    page.click("#hosts th[data-key='hostname']")
    page.click("#hosts th[data-key='phase']")
    # The rows follow the appliance's answer to the new order.
    first_phase = lambda: page.locator("#hosts tbody tr").first.get_attribute("data-phase")
    end = time.monotonic() + 10
    while first_phase() != "failed" and time.monotonic() < end:
        page.wait_for_timeout(50)
    first = first_phase()
    page.screenshot(path=shot, full_page=True)
    seen = {"load_seconds": round(loaded, 3), "polls": polls, "first_sorted": first}
    if "paging" in checks:
        seen["most_rows"] = check_paging(page, checks["hosts"], checks["paging"])
    if outside:
        fail("the page asked for something outside the appliance: " + ", ".join(outside[:5]))
    print(json.dumps(seen))
    browser.close()
