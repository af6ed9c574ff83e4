"""The viewer in a real headless Chromium: a person sees the images, and links carry the ids."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from circuitsviz.store import open_run
from circuitsviz.store.synthetic import write_synthetic_run

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium; .ci/run does)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    fake = write_synthetic_run(tmp_path_factory.mktemp("browser") / "run")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "apps" / "viewer.py"), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.address", "127.0.0.1", "--server.port", str(port),
         "--", str(fake.path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/_stcore/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"streamlit did not start: {proc.stdout.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.5)
    yield base, fake
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_until_idle(page) -> None:
    """Wait for the script run to finish and every image on the page to have loaded."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=60_000)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('[data-testid=\"stMain\"] img')).every(i => i.complete)",
        timeout=60_000)


def loaded_images(page, selector: str) -> list[int]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.naturalWidth)")


def test_compare_deep_link_shows_images_and_links_to_a_feature(served):
    from playwright.sync_api import sync_playwright

    base, fake = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.goto(f"{base}/compare?run={fake.path}&unit={fake.split_channel}")
            page.get_by_role("heading", name=f"{fake.split_channel} and its SAE features").wait_for(timeout=60_000)
            wait_until_idle(page)
            page.screenshot(path=str(ARTIFACTS / "viewer-compare.png"), full_page=True)

            widths = loaded_images(page, '[data-testid="stMain"] [data-testid="stImage"] img')
            run = open_run(fake.path)
            split = run.split(*fake.split_channel.split(":"))
            expected = (len(run.visualizations(fake.split_channel, "positive") + run.visualizations(fake.split_channel, "diversity"))
                        + min(12, len(run.examples(fake.split_channel)))
                        + sum(1 + min(6, len(run.examples(f.unit_id))) for f in split.features))
            assert len(widths) == expected, widths
            assert all(w > 0 for w in widths), widths

            feature = fake.features[0]
            page.locator('[data-testid="stMain"] a', has_text="open feature").first.click()
            page.get_by_role("heading", name=feature).wait_for(timeout=60_000)
            wait_until_idle(page)
            url = urllib.parse.urlparse(page.url)
            assert url.path.endswith("/feature"), page.url
            assert urllib.parse.parse_qs(url.query)["unit"] == [feature], page.url
            widths = loaded_images(page, '[data-testid="stMain"] [data-testid="stImage"] img')
            assert widths and all(w > 0 for w in widths), widths
            page.screenshot(path=str(ARTIFACTS / "viewer-feature.png"), full_page=True)
        finally:
            browser.close()
