"""How the browser beds launch Debian's Chromium under Playwright for
Python: headless, executable_path at /usr/bin/chromium (Playwright never
downloads a browser of its own), and nothing that talks to the internet, so
the page can only have what the appliance serves."""

EXECUTABLE = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]


def launch(playwright):
    """A headless Debian Chromium from a started sync_playwright()."""
    return playwright.chromium.launch(executable_path=EXECUTABLE, headless=True, args=ARGS)
