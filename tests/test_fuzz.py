"""Property-based checks of everything tunevision reads from outside: model.json fields, request bodies, headers
and query strings, MNIST idx headers. Whatever hypothesis draws, the answer is a TunevisionError (or a 4xx), never
another exception, a 5xx or a wrong-looking probability."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tunevision as tv
from tunevision.core.errors import TunevisionError

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)
FIELDS = ["architecture", "classes", "image_size", "resize_size", "mean", "std", "temperature", "dropout", "task",
          "extra", "format"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tunevision.models.backbones import build_classifier, create_backbone
    from tunevision.models.bundle import BundleMeta, save_bundle
    folder = tmp_path_factory.mktemp("fuzz") / "model"
    save_bundle(build_classifier(create_backbone("tiny_cnn", pretrained=False), 2),
                BundleMeta("tiny_cnn", ["a", "b"], 32, 36, [0.5] * 3, [0.25] * 3), folder)
    return folder


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_any_model_json_field_value_loads_sanely_or_is_one_line(bundle: Path, tmp_path_factory, field: str,
                                                                value) -> None:
    folder = tmp_path_factory.mktemp("crafted") / "model"
    shutil.copytree(bundle, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta[field] = value
    (folder / "model.json").write_text(json.dumps(meta))
    try:
        model = tv.load(str(folder), device="cpu")
    except TunevisionError as e:
        assert "\n" not in str(e)
        return
    probs = model.predict_proba(np.zeros((40, 40, 3), np.uint8))
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-4)


@pytest.fixture(scope="module")
def client(bundle: Path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunevision.serve.app import create_app
    with TestClient(create_app(str(bundle), max_upload_mb=0.5)) as c:
        yield c


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048) | st.text(max_size=300).map(str.encode),
       ctype=st.sampled_from(["image/png", "application/json", "multipart/form-data; boundary=x",
                              "application/octet-stream", "text/plain", ""]) | st.text(max_size=20),
       top_k=st.none() | st.text(max_size=6), header=st.text(max_size=20))
def test_any_request_is_answered_without_a_5xx(client, body: bytes, ctype: str, top_k, header: str) -> None:
    def raw(text: str) -> bytes:  # any byte a client can put in a header value (not CR, LF or NUL)
        return text.encode("latin-1", "replace").translate(None, b"\r\n\0").strip()
    headers = {"Content-Type": raw(ctype), "X-Request-ID": raw(header)}
    r = client.post("/predict", content=body, headers=headers, params=None if top_k is None else {"top_k": top_k})
    assert r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.binary(min_size=0, max_size=24), tail=st.binary(max_size=64))
def test_any_idx_header_reads_or_is_one_line(tmp_path_factory, header: bytes, tail: bytes) -> None:
    from tunevision.data.archives import mnist_source
    root = tmp_path_factory.mktemp("idx")
    (root / "train-images-idx3-ubyte").write_bytes(header + tail)
    labels = np.arange(2, dtype=np.uint8)
    (root / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + labels.tobytes())
    try:
        ds = mnist_source(str(root), 0.5, 0)
    except TunevisionError as e:
        assert "\n" not in str(e)
        return
    assert ds.arrays.ndim == 3 and len(ds.arrays) == 2
