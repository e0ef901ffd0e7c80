"""A server you can leave running: every request dialect, a key, 503 when full, bad options refused, metrics,
JSON access lines, a bounded memory footprint, and a clean drain on SIGTERM."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402

from tunevision.cli.main import main  # noqa: E402
from tunevision.core.errors import TunevisionError  # noqa: E402
from tunevision.serve.app import ServeOptions, create_app  # noqa: E402


def png(colour=(220, 40, 30), size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def jpeg(colour=(220, 40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def client(tiny_bundle: Path):
    with TestClient(create_app(str(tiny_bundle), max_upload_mb=0.5)) as c:
        yield c


def top_label(response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["top"][0]["label"]


def test_every_dialect_gives_the_same_answer(client: TestClient) -> None:
    data = png()
    answers = [
        client.post("/predict", files={"file": ("a.png", data, "image/png")}),
        client.post("/predict", files=[("files", ("a.png", data, "image/png")), ("files", ("b.png", png((30, 60, 220)),
                                                                                              "image/png"))]),
        client.post("/predict", content=data, headers={"Content-Type": "image/png"}),
        client.post("/predict", content=data, headers={"Content-Type": "application/octet-stream"}),
        client.post("/predict", json={"image": base64.b64encode(data).decode()}),
        client.post("/predict", json={"images": ["data:image/png;base64," + base64.b64encode(data).decode()]}),
    ]
    labels = {top_label(r) for r in answers}
    assert len(labels) == 1
    assert [p["filename"] for p in answers[1].json()["predictions"]] == ["a.png", "b.png"]
    assert all(set(r.json()) == {"predictions"} for r in answers)


@pytest.mark.parametrize("kwargs, status, fragment", [
    ({"content": b""}, 400, "empty request"),
    ({"content": b"\x00" * 300, "headers": {"Content-Type": "image/jpeg"}}, 400, "not a readable image"),
    ({"content": jpeg()[:200], "headers": {"Content-Type": "image/jpeg"}}, 400, "body"),
    ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported Content-Type"),
    ({"json": {"img": "x"}}, 400, "JSON body must be"),
    ({"json": {"image": "%%%"}}, 400, "not valid base64"),
    ({"files": {"other": ("a.png", png(), "image/png")}}, 400, "'file' or 'files'"),
    ({"content": b"\x89PNG" + b"0" * 600_000, "headers": {"Content-Type": "image/png"}}, 413, "larger than 0.5 MB"),
])
def test_bad_requests_get_a_4xx_with_a_reason(client: TestClient, kwargs, status, fragment) -> None:
    r = client.post("/predict", **kwargs)
    assert r.status_code == status and fragment in r.json()["detail"], r.text


@pytest.mark.parametrize("top_k", ["-1", "0", "abc", "2.5"])
def test_invalid_top_k_is_422(client: TestClient, top_k: str) -> None:
    r = client.post(f"/predict?top_k={top_k}", content=png(), headers={"Content-Type": "image/png"})
    assert r.status_code == 422 and "top_k must be" in r.json()["detail"]


def test_decompression_bomb_is_refused_before_decoding(client: TestClient) -> None:
    from tests.test_images import _png_header_only
    r = client.post("/predict", content=_png_header_only(30000, 30000), headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and "decompression bomb" in r.json()["detail"]


def test_api_key(tiny_bundle: Path) -> None:
    with TestClient(create_app(str(tiny_bundle), api_key="s3cret")) as c:
        assert c.get("/health").status_code == 200 and c.get("/health").json()["key_required"]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = c.post("/predict", content=png(), headers={"Content-Type": "image/png", **headers})
            assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert c.get("/labels").status_code == 401 and c.get("/metrics").status_code == 401
        ok = c.post("/predict", content=png(), headers={"Content-Type": "image/png", "Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_a_full_queue_answers_503_with_retry_after(tiny_bundle: Path) -> None:
    import httpx
    app = create_app(str(tiny_bundle), queue=1)

    async def go() -> list:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                return await asyncio.gather(*(http.post("/predict", content=png(), headers={
                    "Content-Type": "image/png"}) for _ in range(8)))
    statuses = [r.status_code for r in asyncio.run(go())]
    busy = [r for r in asyncio.run(go()) if r.status_code == 503]
    assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
    assert busy and busy[0].headers["Retry-After"] == "1"


def test_metrics_and_json_access_lines(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tunevision.access"):
        r = client.post("/predict", content=png(), headers={"Content-Type": "image/png", "X-Request-ID": "abc123"})
        client.post("/predict", content=b"", headers={"Content-Type": "image/png"})
    assert r.headers["X-Request-ID"] == "abc123"
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "tunevision.access"]
    assert lines[0]["id"] == "abc123" and lines[0]["status"] == 200 and lines[1]["status"] == 400
    text = client.get("/metrics").text
    for name in ('tunevision_requests_total{path="/predict",status="200"} 1.0', "tunevision_request_seconds_bucket",
                 "tunevision_batch_images_count", 'tunevision_errors_total{kind="bad_request"} 1.0',
                 "tunevision_rss_bytes"):
        assert name in text, name


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--max-upload-mb", "-1"), ("--queue", "0"),
                                         ("--timeout-s", "0"), ("--runtime", "tpu")])
def test_bad_serve_options_are_one_line(tiny_bundle: Path, flag: str, value: str) -> None:
    r = CliRunner().invoke(main, ["serve", str(tiny_bundle), flag, value])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "error:" in r.output, r.output
    with pytest.raises(TunevisionError):
        ServeOptions(workers=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunevision", "serve", str(bundle), "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(proc.communicate()[1])


def post(url: str, data: bytes, ctype: str = "image/png", timeout: float = 60) -> int:
    req = urllib.request.Request(url + "/predict", data=data, headers={"Content-Type": ctype})
    try:
        return urllib.request.urlopen(req, timeout=timeout).status
    except urllib.error.HTTPError as e:
        return e.code


def test_sigterm_drains_and_exits_0(tiny_bundle: Path) -> None:
    proc, url = start_server(tiny_bundle)
    results: list[int] = []
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), np.uint8)).save(big, "PNG")
    threads = [threading.Thread(target=lambda: results.append(post(url, big.getvalue()))) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the uploads are in flight
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert proc.wait(timeout=30) == 0
    assert results and all(s == 200 for s in results), results  # accepted before SIGTERM: answered


def test_memory_stays_bounded_under_large_images(tiny_bundle: Path) -> None:
    """8 concurrent uploads of a 16 MP PNG (48 MB decoded each), workers=1: the peak stays within the stated
    bound (model + workers x (8 bytes x pixels + upload) + 64 MB), then RSS does not keep growing."""
    proc, url = start_server(tiny_bundle, "--max-upload-mb", "2")
    try:
        def rss() -> float:
            text = urllib.request.urlopen(url + "/metrics").read().decode()
            return float(next(line.split()[1] for line in text.splitlines() if line.startswith("tunevision_rss_bytes")))
        buf = io.BytesIO()
        Image.new("RGB", (4000, 4000), (200, 30, 30)).save(buf, "PNG")
        post(url, buf.getvalue())  # warm-up: first inference allocations
        base, peak = rss(), 0.0
        for _ in range(2):
            threads = [threading.Thread(target=post, args=(url, buf.getvalue())) for _ in range(8)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss())
                time.sleep(0.02)
        bound = 1 * (8 * 4000 * 4000 + len(buf.getvalue())) + 64 * 2**20
        assert peak - base <= bound, (peak - base) / 2**20
        assert rss() - base <= 64 * 2**20  # buffers released after the burst
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_hostile_bodies_are_a_4xx_never_a_500(client: TestClient) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = client.post("/predict", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
    r = client.post("/predict?top_k=\u00b2", files={"file": ("a.png", png(), "image/png")})
    assert r.status_code == 422 and "top_k" in r.json()["detail"]


def test_random_paths_do_not_grow_the_metrics(tiny_bundle: Path) -> None:
    with TestClient(create_app(str(tiny_bundle), api_key="k")) as c:
        before = len(c.get("/metrics", headers={"Authorization": "Bearer k"}).text)
        for i in range(300):
            assert c.get(f"/random-{i}").status_code == 401
        after = len(c.get("/metrics", headers={"Authorization": "Bearer k"}).text)
    assert after - before < 2_000, after - before


def test_a_request_body_past_the_request_limit_is_413_and_uploads_share_a_memory_budget(tiny_bundle: Path) -> None:
    from tunevision.serve.inputs import ByteBudget, HTTPError
    with TestClient(create_app(str(tiny_bundle), max_upload_mb=1, max_images=16, max_request_mb=0.1)) as c:
        big = b"\xff" * 200_000
        r = c.post("/predict", content=big, headers={"content-type": "image/png"})
        assert r.status_code == 413
        assert top_label(c.post("/predict", files={"file": ("a.png", png(), "image/png")}))
    budget = ByteBudget(1000)
    first, second = budget.reserve(), budget.reserve()
    first.take(800)
    with pytest.raises(HTTPError) as refused:
        second.take(300)
    assert refused.value.status == 503 and budget.used == 800
    first.close()
    second.take(300)
    assert budget.used == 300


def test_slow_header_connections_are_closed_after_the_header_timeout(tiny_bundle: Path) -> None:
    proc, url = start_server(tiny_bundle, "--header-timeout-s", "1")
    port = int(url.rsplit(":", 1)[1])
    try:
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        start = time.time()
        closed = set()
        while time.time() - start < 6 and len(closed) < 3:
            for i, s in enumerate(sockets):
                if i in closed:
                    continue
                try:
                    s.sendall(b"G")  # one header byte at a time, never a whole request line
                    s.settimeout(0.3)
                    if s.recv(1) == b"":
                        closed.add(i)
                except (BrokenPipeError, ConnectionResetError):
                    closed.add(i)
                except socket.timeout:
                    pass
        assert len(closed) == 3 and time.time() - start < 5
        assert urllib.request.urlopen(url + "/health", timeout=5).status == 200  # the server itself is fine
    finally:
        proc.terminate()
        proc.wait(timeout=30)
