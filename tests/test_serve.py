from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tunevision.serve.app import create_app  # noqa: E402


def png(colour=(220, 40, 30), size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
def client(tiny_bundle: Path, request: pytest.FixtureRequest):
    with TestClient(create_app(str(tiny_bundle), max_upload_mb=0.2, workers=1, batch=request.param)) as c:
        yield c


def test_concurrent_requests_are_batched_and_answered_in_order(tiny_bundle: Path) -> None:
    import asyncio

    import httpx
    app = create_app(str(tiny_bundle), batch=True)
    colours = [(220, 40, 30), (30, 60, 220)] * 8

    async def go() -> list[dict]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                rs = await asyncio.gather(*(http.post("/predict", files={"files": (f"{i}.png", png(c), "image/png")})
                                            for i, c in enumerate(colours)))
        return [r.json()["predictions"][0] for r in rs]

    answers = asyncio.run(go())
    assert [a["filename"] for a in answers] == [f"{i}.png" for i in range(16)]
    firsts = {a["top"][0]["label"] for a in answers[0::2]}, {a["top"][0]["label"] for a in answers[1::2]}
    assert len(firsts[0]) == 1 and len(firsts[1]) == 1  # same colour, same answer, whatever batch it rode in


def test_routes(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/labels").json() == ["blue", "red"]
    page = client.get("/")
    assert page.status_code == 200 and "<input" in page.text and "/predict" in page.text


def test_predict_matches_predict_command_preprocessing(client: TestClient, tiny_bundle: Path, tmp_path: Path) -> None:
    r = client.post("/predict?top_k=2", files=[("files", ("a.png", png(), "image/png")),
                                               ("files", ("b.png", png((30, 60, 220)), "image/png"))])
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["filename"] for p in preds] == ["a.png", "b.png"]
    assert abs(sum(t["prob"] for t in preds[0]["top"]) - 1) < 1e-4
    from tunevision.classify.predict import load_predictor, predict_paths
    from tunevision.core.runtime import resolve_runtime
    (tmp_path / "a.png").write_bytes(png())
    model, meta = load_predictor(str(tiny_bundle))
    ref = predict_paths(model, meta, [str(tmp_path / "a.png")], resolve_runtime("auto"), top_k=2)[0]
    assert ref.top[0][0] == preds[0]["top"][0]["label"]
    assert abs(ref.top[0][1] - preds[0]["top"][0]["prob"]) < 1e-3


def test_bad_requests(client: TestClient) -> None:
    r = client.post("/predict", files=[("files", ("x.txt", b"not an image", "text/plain"))])
    assert r.status_code == 400 and "x.txt" in r.json()["detail"]
    big = np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    r = client.post("/predict", files=[("files", ("big.png", buf.getvalue(), "image/png"))])
    assert r.status_code == 413
    from tests.test_images import _png_header_only
    r = client.post("/predict", files=[("files", ("bomb.png", _png_header_only(30000, 30000), "image/png"))])
    assert r.status_code == 400 and "bomb" in r.json()["detail"]
    r = client.post("/predict")
    assert r.status_code == 400 and "empty request" in r.json()["detail"]  # no file at all
