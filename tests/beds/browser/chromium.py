"""How the browser beds launch Debian's Chromium under Playwright for
Python: headless, executable_path at /usr/bin/chromium (Playwright never
downloads a browser of its own), and nothing that talks to the internet, so
the page can only have what the appliance serves."""

import base64
import hashlib
import subprocess

EXECUTABLE = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]


def launch(playwright, extra=()):
    """A headless Debian Chromium from a started sync_playwright(); `extra`
    are more command-line switches (trust_spki's, say)."""
    return playwright.chromium.launch(executable_path=EXECUTABLE, headless=True,
                                      args=ARGS + list(extra))


def trust_spki(cert_path):
    """The switch that makes Chromium accept exactly this certificate (a
    self-signed one, say) by its public key's SHA-256, as an operator who
    compared the fingerprint does: every other certificate error stays."""
    pub = subprocess.run(["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"],
                         input=pub, capture_output=True, check=True).stdout
    spki = base64.b64encode(hashlib.sha256(der).digest()).decode()
    return "--ignore-certificate-errors-spki-list=" + spki
