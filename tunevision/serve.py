"""HTTP service for a bundle or an exported .onnx: the same preprocessing and weights as `predict`.

Bounded by design: uploads over `max_upload_bytes` get 413, non-images and decompression bombs 400,
and at most `workers` inferences run at once (a burst waits in line instead of exhausting memory).
With `batch=True`, requests that arrive while the model is busy are run together as one batch when it
frees up: no added wait, and one forward pass for many images (see benchmarks/results/serve.md).
"""

import asyncio
import contextlib
from importlib import resources
from typing import Callable

import numpy as np

from .images import DEFAULT_MAX_PIXELS, ImageError
from .inference import predict_probs
from .predict import load_predictor, model_source
from .runtime import INFERENCE_PRECISION, resolve_runtime


class MicroBatcher:
    """One queue, `workers` consumers; each consumer takes everything queued (up to `max_batch` images)."""

    def __init__(self, infer: Callable[[list[np.ndarray], int], list], workers: int, max_batch: int = 32) -> None:
        self.infer, self.workers, self.max_batch = infer, workers, max_batch
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=256)  # a full queue makes new requests wait
        self.tasks: list[asyncio.Task] = []

    async def submit(self, images: list[np.ndarray], top_k: int) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, top_k, future))
        return await future

    async def _consume(self) -> None:
        from fastapi.concurrency import run_in_threadpool
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and sum(len(b[0]) for b in batch) < self.max_batch:
                batch.append(self.queue.get_nowait())
            images = [im for b in batch for im in b[0]]
            try:
                tops = await run_in_threadpool(self.infer, images, max(b[1] for b in batch))
            except Exception as e:  # one bad batch must not kill the consumer
                for *_, fut in batch:
                    fut.set_exception(e)
                continue
            start = 0
            for ims, k, fut in batch:
                fut.set_result([t[:k] for t in tops[start:start + len(ims)]])
                start += len(ims)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._consume()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def create_app(model_path: str, *, max_upload_bytes: int = 10 * 2**20, workers: int = 1, batch: bool = True,
               max_pixels: int = DEFAULT_MAX_PIXELS):
    from fastapi import FastAPI, File, HTTPException, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse

    source = model_source(model_path)  # a typo is an error, never a silent ImageNet model
    rt = resolve_runtime("cpu" if source.endswith(".onnx") else "auto", INFERENCE_PRECISION)
    model, meta = load_predictor(source, rt.device)
    prep = meta.preprocess
    model.eval()
    slots = asyncio.Semaphore(workers)

    def infer(images: list[np.ndarray], top_k: int) -> list[list[dict]]:
        probs = predict_probs(model, np.stack(images), rt, meta.image_size, temperature=meta.temperature)
        k = min(top_k, len(meta.classes))
        return [[{"label": meta.classes[i], "prob": round(float(p[i]), 6)} for i in np.argsort(-p)[:k]]
                for p in probs]

    batcher = MicroBatcher(infer, workers) if batch else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if batcher:
            batcher.start()
        yield
        if batcher:
            await batcher.stop()

    app = FastAPI(title="tunevision", version=meta.tunevision_version or "0", lifespan=lifespan)

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
                images.append(await run_in_threadpool(prep.decode, data, max_pixels=max_pixels))
            except ImageError as e:
                raise HTTPException(400, f"{upload.filename}: {e}") from None
        if batcher:
            tops = await batcher.submit(images, top_k)
        else:
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
