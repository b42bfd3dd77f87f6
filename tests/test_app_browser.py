"""
The try-it page in a real headless browser (Debian's chromium, driven by Playwright): type
words, upload an image, read the result, save a screenshot. Skips without a browser (CI
installs one: .ci/run).
"""

import os
import shutil

import pytest

pytest.importorskip("gradio", reason="the page's optional extra: install.py --extra app")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test requirement")

from .helpers.app_server import AppServer  # noqa: E402

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
# where the screenshot goes (default: the test's temporary folder)
SCREENSHOT = os.environ.get("VILD_D2_APP_SCREENSHOT")
# CI sets it: there a missing browser is a failure, not a skip
REQUIRED = os.environ.get("VILD_D2_REQUIRE_BROWSER") == "1"


def test_ci_has_the_browser():
    if not REQUIRED:
        pytest.skip("only CI requires the browser (VILD_D2_REQUIRE_BROWSER=1)")
    assert BROWSER is not None, "no chromium on PATH: .ci/run installs it with apt-get"


@pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (apt-get install chromium)")
def test_a_person_types_words_uploads_and_reads_the_result(tiny_model_folder, tiny_lvis, tmp_path):
    folder = os.path.join(tiny_lvis["root"], "val")
    image = os.path.join(folder, sorted(os.listdir(folder))[0])
    args = ["--model", tiny_model_folder["path"], "--models-root", str(tmp_path / "none")]
    server = AppServer(args + ["--examples", folder, "--device", "cpu"], str(tmp_path / "app"))
    requests = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server.url)
            page.locator("#words textarea").fill("red circle, blue star, hat")
            page.locator("#image input[type=file]").set_input_files(image)
            page.locator("#detect").click()
            status = page.locator("#status")
            status.filter(has_text="detections").wait_for(timeout=120_000)
            text = status.inner_text()
            # the table's name column (the rows it has drawn: it draws those in view)
            names = set(page.locator('#table [role=gridcell][data-col="0"]').all_inner_texts())
            shot = SCREENSHOT or str(tmp_path / "app.png")
            page.screenshot(path=shot, full_page=True)
            browser.close()
    finally:
        server.stop()
    assert "words" in text and os.path.getsize(shot) > 10_000
    assert names and names <= {"red circle", "blue star", "hat"}, names
    # nothing fetched from outside the machine
    outside = [u for u in requests if not u.startswith(("http://127.0.0.1", "data:", "blob:"))]
    assert outside == []
