"""A real browser drives the served page: upload a photo, read the bars, compare with POST /predict."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed")


def open_page(p) -> tuple:
    """Headless Debian chromium with the flags this closed network needs; console errors collected."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return browser, page, errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_bundle: Path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunevision.cli.main", "serve", str(tiny_bundle), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_upload_through_the_page_matches_the_api(server: str, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from tests.test_serve import png
    photo = tmp_path / "red.png"
    photo.write_bytes(png())
    import httpx
    api = httpx.post(server + "/predict?top_k=5", files={"files": ("red.png", photo.read_bytes(), "image/png")})
    expected = api.json()["predictions"][0]["top"]
    with playwright.sync_playwright() as p:
        browser, page, errors = open_page(p)
        page.goto(server + "/")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".prediction", timeout=20000)
        shown = [(r.query_selector(".label").inner_text(), r.query_selector(".prob").inner_text())
                 for r in page.query_selector_all(".prediction")]
        assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth > 0")
        page.screenshot(path=str(os.environ.get("TUNEVISION_SCREENSHOT", tmp_path / "serve.png")))
        browser.close()
    assert [label for label, _ in shown] == [t["label"] for t in expected]
    assert [prob for _, prob in shown] == [f"{100 * t['prob']:.1f}%" for t in expected]
    assert not errors, json.dumps(errors)


def test_report_opens_in_a_browser_with_every_section_and_image(colour_folders: Path, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from click.testing import CliRunner

    from tests.conftest import tiny_args
    from tunevision.cli.main import main
    r = CliRunner().invoke(main, ["train", str(colour_folders), *tiny_args(str(tmp_path / "c"), tmp_path / "runs",
                                  "--mode", "finetune", "--epochs", "2", "--name", "r")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = tmp_path / "runs" / "r" / "report.html"
    with playwright.sync_playwright() as p:
        browser, page, errors = open_page(p)
        page.goto(report.as_uri())
        sections = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
        broken = page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0))"
                                                  ".length")
        count = page.eval_on_selector_all("img", "imgs => imgs.length")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert sections == ["dataset", "augmentation", "training", "time", "results", "top-losses", "calibration", "data-audit", "model"]
    assert count == 7 and broken == 0 and not errors
