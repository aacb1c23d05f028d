"""Headless check of `serve`'s playground page: pick a prefix, type a prompt, read the streamed answer.

    prefix-tune serve --model tests/fixtures/gpt2-b --bind 127.0.0.1:18080 &
    pip install playwright   # the Python package only; Debian's chromium is the browser
    python scripts/playground_check.py http://127.0.0.1:18080/ [--screenshot shot.png]

Prints the streamed text and the status line; exits non-zero if no answer arrives.

With `--expect-text TEXT` (the fixture tests/fixtures/gpt2-script answers "Q" with markup) it also
checks that the page shows the model's text as text: the output's text is TEXT exactly, no element
was parsed out of it, and no script in it ran (the page's title is unchanged). The CLI's test
`the_playground_shows_model_text_as_text` runs it this way.
"""
import argparse
import sys

from playwright.sync_api import sync_playwright

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--prompt", default=" name : The Vaults")
parser.add_argument("--model", default="base")
parser.add_argument("--max", type=int, default=12)
parser.add_argument("--expect-text")
parser.add_argument("--screenshot")
parser.add_argument("--chromium", default="/usr/bin/chromium")
args = parser.parse_args()

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.goto(args.url)
    title = page.title()
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", args.model)
    page.fill("#prompt", args.prompt)
    page.fill("#max", str(args.max))
    page.click("#go")
    page.wait_for_function("document.querySelector('#status').textContent.includes('finish')", timeout=20000)
    output = page.text_content("#output")
    print("output:", repr(output))
    print("status:", page.text_content("#status"))
    if args.screenshot:
        page.screenshot(path=args.screenshot)
    failures = []
    if args.expect_text is not None:
        if output != args.expect_text:
            failures.append(f"the output's text is {output!r}, not {args.expect_text!r}")
        elements = page.eval_on_selector("#output", "node => node.querySelectorAll('*').length")
        if elements:
            failures.append(f"{elements} elements were parsed out of the model's text")
        page.wait_for_timeout(300)  # an injected onerror would have fired by now
        if page.title() != title:
            failures.append(f"a script in the model's text ran: the title became {page.title()!r}")
    browser.close()
    for failure in failures:
        print("FAIL:", failure)
    sys.exit(1 if failures else 0)
