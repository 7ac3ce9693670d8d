"""The built site in a real browser: Debian's Chromium (/usr/bin/chromium), driven by Playwright (no browser
download). Every page of the nav loads without a console error, the navigation and the search work, images
render and the API reference shows the objects it documents. Skips, saying why, where Chromium cannot start."""

from __future__ import annotations

import functools
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.slow


def nav_pages() -> list[str]:
    """The Markdown pages of mkdocs.yml's nav, in order, relative to docs/."""
    from mkdocs.config import load_config

    pages: list[str] = []

    def walk(items) -> None:
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            walk(value) if isinstance(value, list) else pages.append(value)

    walk(load_config(str(REPO / "mkdocs.yml")).nav)
    return pages


def page_url(root: str, page: str) -> str:
    """The URL of ``page`` (``tutorials/own-data.md``) on a site served at ``root``."""
    path = "" if page == "index.md" else re.sub(r"(index)?\.md$", "", page).rstrip("/") + "/"
    return root + path


@pytest.fixture(scope="module")
def site_url(built_site):
    done, site = built_site
    if done.returncode != 0:
        pytest.skip("the site did not build: see test_docs.py::test_site_builds_strictly")
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_) -> None:
        pass


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Error as error:
            pytest.skip(f"Chromium did not start: {str(error).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.errors = []
    tab.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    context.close()


def test_every_page_loads_without_console_errors_and_its_images_render(page, site_url):
    images = 0
    for name in nav_pages():
        response = page.goto(page_url(site_url, name), wait_until="load")
        assert response is not None and response.ok, f"{name}: HTTP {response and response.status}"
        assert page.locator("article h1").count() >= 1, f"{name}: no title"
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))"
        )
        assert broken == [], f"{name}: images that did not render: {broken}"
        images += page.evaluate("document.images.length")
        assert page.errors == [], f"{name}: console errors: {page.errors}"
    assert images >= 1, "no page of the site shows an image"


def test_navigation_leads_from_home_to_a_tutorial_and_a_reference_page(page, site_url):
    page.goto(site_url)
    page.locator("article a[href*='tutorials/made-in-20-lines']").first.click()
    page.wait_for_url(re.compile(r"tutorials/made-in-20-lines/$"))
    page.locator("nav.md-nav a[href*='reference/config/']").first.click()
    page.wait_for_url(re.compile(r"reference/config/$"))
    assert page.locator("article h1").count() == 1
    assert page.errors == []


def test_search_finds_product_of_experts(page, site_url):
    page.goto(site_url)
    page.keyboard.press("/")  # Material's shortcut to the search box
    page.locator("input.md-search__input").press_sequentially("product of experts")  # key events, as typed
    results = page.locator(".md-search-result__item")
    results.first.wait_for()
    assert results.count() >= 1
    assert page.errors == []


def test_the_api_reference_shows_the_objects_it_documents(page, site_url):
    documented = re.findall(r"^:::\s*([\w.]+)", (REPO / "docs/reference/api.md").read_text(), flags=re.M)
    assert documented, "docs/reference/api.md documents no object (no '::: made_exp....' line)"
    page.goto(page_url(site_url, "reference/api.md"))
    for identifier in documented:
        heading = page.locator(f"[id='{identifier}']")
        assert heading.count() >= 1, f"API reference: {identifier} not rendered"
    assert page.locator(".doc-heading").count() >= len(documented)
    assert page.errors == []
