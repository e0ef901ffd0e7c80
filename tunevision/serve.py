"""HTTP service for a bundle or an exported .onnx: the same preprocessing and weights as `predict`.

Bounded by design: uploads over `max_upload_bytes` get 413, non-images and decompression bombs 400,
and at most `workers` inferences run at once (a burst waits in line instead of exhausting memory).
"""

import asyncio
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .augment import eval_view
from .images import DEFAULT_MAX_PIXELS, ImageError, decode_square
from .predict import load_predictor, split_model_argument
from .runtime import resolve_runtime


def create_app(model_path: str, *, max_upload_bytes: int = 10 * 2**20, workers: int = 2,
               max_pixels: int = DEFAULT_MAX_PIXELS):
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse

    source, _ = split_model_argument([model_path])
    rt = resolve_runtime("cpu" if source and source.endswith(".onnx") else "auto")
    model, meta = load_predictor(source, rt.device)
    model.eval()
    slots = asyncio.Semaphore(workers)
    app = FastAPI(title="tunevision", version=meta.tunevision_version or "0")

    @torch.no_grad()
    def infer(images: list[np.ndarray], top_k: int) -> list[list[dict]]:
        x = eval_view(torch.from_numpy(np.stack(images)), meta.image_size).to(rt.device)
        with rt.autocast():
            probs = torch.softmax(model(x.contiguous(memory_format=torch.channels_last)).float() / meta.temperature,
                                  1).cpu().numpy()
        k = min(top_k, len(meta.classes))
        return [[{"label": meta.classes[i], "prob": round(float(p[i]), 6)} for i in np.argsort(-p)[:k]]
                for p in probs]

    async def read_limited(upload: UploadFile) -> bytes:
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"{upload.filename}: larger than {max_upload_bytes // 2**20} MB")
        return data

    @app.post("/predict")
    async def predict(request: Request, files: list[UploadFile] = File(...), top_k: int = 3) -> dict:
        length = int(request.headers.get("content-length") or 0)
        if length > max_upload_bytes * max(1, len(files)) + 65536:
            raise HTTPException(413, f"request larger than {max_upload_bytes // 2**20} MB per image")
        images = []
        for upload in files:
            data = await read_limited(upload)
            try:
                images.append(await run_in_threadpool(decode_square, data, meta.resize_size, max_pixels=max_pixels))
            except ImageError as e:
                raise HTTPException(400, f"{upload.filename}: {e}") from None
        async with slots:
            tops = await run_in_threadpool(infer, images, top_k)
        return {"predictions": [{"filename": f.filename, "top": t} for f, t in zip(files, tops)]}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": meta.architecture, "classes": len(meta.classes),
                "image_size": meta.image_size}

    @app.get("/labels")
    def labels() -> list[str]:
        return meta.classes

    page = resources.files("tunevision").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    return app
