"""Headless check of `serve`'s playground page: pick a prefix, type a prompt, read the streamed answer.

    prefix-tune serve --model tests/fixtures/gpt2-b --bind 127.0.0.1:18080 &
    pip install playwright   # the Python package only; Debian's chromium is the browser
    python scripts/playground_check.py http://127.0.0.1:18080/ [screenshot.png]

Prints the streamed text and the status line; exits non-zero if no answer arrives.
"""
import sys
from playwright.sync_api import sync_playwright

url = sys.argv[1]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "base")
    page.fill("#prompt", " name : The Vaults")
    page.fill("#max", "12")
    page.click("#go")
    page.wait_for_function("document.querySelector('#status').textContent.includes('finish')", timeout=20000)
    print("output:", repr(page.text_content("#output")))
    print("status:", page.text_content("#status"))
    page.screenshot(path=sys.argv[2] if len(sys.argv) > 2 else "playground.png")
    browser.close()
