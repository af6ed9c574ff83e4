"""The viewer in a real headless Chromium: a person sees the split, and links carry the ids.

The demo-run test needs a finished demo run: ``$CIRCUITSVIZ_DEMO_RUN`` names one (``make demo``
writes ``runs/demo``); otherwise the test runs the demo study first (a few minutes: slow).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from .test_serve import free_port, wait_healthy

from circuitsviz.store import open_run
from circuitsviz.store.synthetic import write_synthetic_run

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1400, "height": 1000}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium; .ci/run does)"),
]


def serve(path: Path, cache: Path):
    """``circuitsviz serve PATH`` on a free port; returns the base URL and the server process."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CIRCUITSVIZ_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "circuitsviz", "serve", str(path), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_healthy(proc, port)
    return f"http://127.0.0.1:{port}", proc


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def open_page(browser, base: str, outside: list[str]):
    page = browser.new_page(viewport=VIEWPORT)
    page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else outside.append(r.url))
    return page


def visit(page, url: str) -> None:
    page.goto(url)
    wait_until_idle(page)


def wait_until_idle(page) -> None:
    """Wait for the script run to finish and every image in view to have loaded."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=90_000)
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('[data-testid="stMain"] img')).every(i => {
               const r = i.getBoundingClientRect();
               return i.complete || r.top > window.innerHeight;   // lazy images below the fold may wait
           })""", timeout=90_000)


def broken_images(page) -> list[str]:
    return page.eval_on_selector_all(
        '[data-testid="stMain"] img',
        "els => els.filter(e => e.complete && e.naturalWidth === 0 && e.getBoundingClientRect().top < innerHeight)"
        ".map(e => e.src.slice(0, 80))")


# ---------------------------------------------------------------- a synthetic run (fast)
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    fake = write_synthetic_run(tmp / "run")
    base, proc = serve(fake.path, tmp / "cache")
    yield base, fake
    stop(proc)


def test_deep_links_navigate_and_nothing_is_fetched_from_outside(synthetic, browser):
    base, fake = synthetic
    outside: list[str] = []
    page = open_page(browser, base, outside)
    visit(page, f"{base}/layer?layer=mixed4e")
    assert page.get_by_role("heading", name="mixed4e · 16 channels").is_visible()
    assert not broken_images(page)
    assert page.locator('[data-testid="stAppDeployButton"]').count() == 0 or \
        not page.locator('[data-testid="stAppDeployButton"]').first.is_visible()

    visit(page, f"{base}/compare?unit={fake.split_channel}")
    feature = fake.features[0]
    page.locator(f'.cv-fcard[data-feature="{feature}"] a').first.click()
    page.get_by_role("heading", name=feature).wait_for(timeout=60_000)
    wait_until_idle(page)
    url = urllib.parse.urlparse(page.url)
    assert url.path.endswith("/feature") and urllib.parse.parse_qs(url.query)["unit"] == [feature], page.url
    assert not broken_images(page)
    side = page.locator('[data-testid="stSidebar"] a', has_text="Compare").get_attribute("href")
    assert f"unit={fake.split_channel}" in urllib.parse.unquote(side)  # the sidebar keeps the unit's channel
    page.reload()
    page.get_by_role("heading", name=feature).wait_for(timeout=60_000)  # the deep link survives a reload
    visit(page, f"{base}/evidence")  # a run without evidence.json: the page says how to make it
    page.get_by_role("heading", name="Held-out evidence").wait_for(timeout=60_000)
    assert page.get_by_text("circuitsviz demo", exact=False).first.is_visible()
    assert outside == [], outside
    page.close()


# ---------------------------------------------------------------- the demo run (the evidence)
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    path = os.environ.get("CIRCUITSVIZ_DEMO_RUN")
    if not path:
        path = tmp / "demo"
        demo_cmd = ["demo", "--out", str(path), "--no-serve", "--no-evaluate"]  # the evidence is tested elsewhere
        subprocess.run([sys.executable, "-m", "circuitsviz", *demo_cmd], cwd=ROOT, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    base, proc = serve(Path(path), tmp / "cache")
    yield base, open_run(path)
    stop(proc)


@pytest.mark.slow
def test_demo_compare_page_shows_the_split_of_mixed3b_1(demo, browser):
    base, run = demo
    outside: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(browser, base, outside)
    visit(page, f"{base}/compare?unit=mixed3b:1")
    page.get_by_role("heading", name="mixed3b:1 and its SAE features").wait_for()
    page.screenshot(path=str(ARTIFACTS / "viewer-compare.png"))

    # the stacked bar: its parts' shares, and the drawn widths, make up the whole channel
    shares = page.eval_on_selector_all(".cv-sharebar [data-share]", "els => els.map(e => +e.dataset.share)")
    assert abs(sum(shares) - 1.0) < 0.01, shares
    widths = page.eval_on_selector_all(".cv-sharebar [data-share]", "els => els.map(e => e.getBoundingClientRect().width)")
    bar = page.locator(".cv-share").bounding_box()["width"]
    assert abs(sum(widths) - bar) / bar < 0.01, (widths, bar)

    # every feature of the split, each with a concept label the reader can see
    split = run.split("mixed3b", 1)
    cards = page.locator(".cv-fcard")
    assert cards.evaluate_all("els => els.map(e => e.dataset.feature)") == [f.unit_id for f in split.features]
    for i in range(cards.count()):
        label = cards.nth(i).locator(".cv-concept")
        assert label.get_attribute("data-concept") and label.inner_text().strip() not in ("", "no concept")

    # the concept chart: at least three concepts at or above half the best one's mean
    above = page.locator('.cv-concepts [data-above="1"]')
    assert above.count() >= 3
    assert not broken_images(page)

    for name, path in (("unit", "/unit?unit=mixed3b:1"), ("feature", f"/feature?unit={split.features[0].unit_id}"),
                       ("layer", "/layer?layer=mixed3b")):
        visit(page, base + path)
        assert not page.locator('[data-testid="stException"]').count()
        assert not broken_images(page)
        page.screenshot(path=str(ARTIFACTS / f"viewer-{name}.png"))
    assert outside == [], outside
    page.close()
