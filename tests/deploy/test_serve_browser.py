"""End to end: headless Chromium loads the page from a live server, uploads an image, checks the count.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` Python package (no
browser download: Playwright drives the system Chromium). Skipped with the reason when they are
missing, except in CI (``CI=true``), where it must run. The screenshot is saved under
``test-artifacts/deploy/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from deploy_helpers import cells_png

from unetkit.export import predictor_for
from unetkit.serve import BackgroundServer, create_app

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "deploy"


def sync_playwright():
    """Playwright's sync API, or a skip (a failure in CI) saying what is missing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; in CI it must run (.ci/run installs them)")
        pytest.skip(reason)
    return start


def test_page_uploads_an_image_and_shows_the_api_count(served_run, tmp_path):
    start = sync_playwright()
    data, _ = cells_png(shape=(160, 200), seed=5)
    image_path = tmp_path / "cells.png"
    image_path.write_bytes(data)
    app = create_app(predictor_for(served_run, "torch", device="cpu"))
    with BackgroundServer(app) as url:
        api = httpx.post(f"{url}/predict?instances=true", files={"file": ("cells.png", data, "image/png")})
        assert api.status_code == 200
        expected = api.json()["count"]
        assert expected > 3
        with start() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 800})
                page.goto(url + "/")
                page.wait_for_function("document.getElementById('model-info').textContent.includes('classes')")
                page.set_input_files("#file", str(image_path))
                page.wait_for_selector("#status[data-state='done']", timeout=30_000)
                assert page.text_content("#count") == str(expected)
                sizes = page.eval_on_selector("#overlay", "el => [el.naturalWidth, el.naturalHeight]")
                assert sizes == [200, 160]
                assert page.eval_on_selector("#image", "el => el.naturalWidth") == 200
                assert page.get_attribute("#download", "href").startswith("data:image/png;base64,")
                assert page.is_visible("#download")
                page.fill("#opacity", "80")
                assert page.eval_on_selector("#overlay", "el => el.style.opacity") == "0.8"
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "serve_page.png"), full_page=True)

                not_an_image = {"name": "notes.png", "mimeType": "image/png", "buffer": b"hello"}
                page.set_input_files("#file", not_an_image)
                page.wait_for_selector("#status[data-state='error']", timeout=30_000)
                assert "not an image" in page.text_content("#status")
            finally:
                browser.close()
    assert (ARTIFACTS / "serve_page.png").stat().st_size > 1000
