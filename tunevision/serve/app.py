"""HTTP service for a model (bundle, run folder, .onnx, int8 ONNX): the same preprocessing and weights as `predict`.

Bounded by design:
  * memory: an upload is read in full under `max_upload_mb` per image and `max_request_mb` per request (413 past
    them), all uploads in flight together under `max_inflight_mb` (503 past it), then decoded inside the pool of
    `workers` threads, with the pixel count checked before any pixel is allocated (400 past `max_pixels`). At
    most `workers` images are decoded at once, so peak memory is about
        the loaded model + workers x (8 bytes x max_pixels + the upload) + a constant
    (README: the measured bound, and benchmarks/serve_soak.py);
  * time: uploads slower than `timeout_s` get 408, requests not answered within it 503;
  * queue: past `queue` requests waiting or running, new ones get 503 with Retry-After at once.
Requests that arrive while the model is busy ride in one batch (`batch=True`). With `api_key` set, every
route except /health and the static page needs `Authorization: Bearer KEY` (compared in constant time).
`/metrics` speaks Prometheus; each request is one JSON access-log line with its id (also X-Request-ID).
"""

import asyncio
import contextlib
import ctypes
import hmac
import json
import logging
import re
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Callable

import numpy as np

from tunevision import tasks
from tunevision.classify.predict import model_source
from tunevision.core.runtime import rss_bytes
from tunevision.data.images import ImageError, open_image
from tunevision.serve.inputs import ByteBudget, HTTPError, parse_top_k, read_images
from tunevision.serve.options import ServeOptions

ACCESS_LOG = logging.getLogger("tunevision.access")
PUBLIC_PATHS = ("/health", "/")  # the page is static HTML; everything that touches the model needs the key


def draining_server(config):
    """uvicorn's Server that drains on SIGTERM/SIGINT (no new connections, in-flight requests finish within the
    graceful timeout) and then returns, so the process exits 0; uvicorn's own handler re-raises the signal."""

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
    return Server(config)


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol with a deadline for each request's headers: a client that trickles header bytes (a
    slowloris) is closed after `seconds`, where uvicorn alone would keep the socket open for good. The body has its
    own deadline in the app (408), and idle keep-alive connections uvicorn's timeout_keep_alive."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        deadline = None

        def waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def arm(self) -> None:
            if self.deadline is None:
                self.deadline = self.loop.call_later(seconds, self.too_slow)

        def disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def too_slow(self) -> None:
            self.deadline = None
            if self.waiting_for_headers():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.arm()

        def data_received(self, data: bytes) -> None:
            if self.waiting_for_headers():
                self.arm()
            super().data_received(data)
            if not self.waiting_for_headers():
                self.disarm()

        def connection_lost(self, exc) -> None:
            self.disarm()
            super().connection_lost(exc)
    return Protocol


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and RSS only ever grows)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class MicroBatcher:
    """One queue, `workers` consumers; each consumer takes everything queued (up to `max_batch` images), runs it as
    one forward pass at the batch's largest top_k, and gives each request its own share (`limit`)."""

    def __init__(self, infer: Callable[[list[np.ndarray], int], list], run, workers: int, max_batch: int = 32,
                 limit: Callable[[dict, int], dict] = lambda answer, k: answer):
        self.infer, self.run, self.workers, self.max_batch, self.limit = infer, run, workers, max_batch, limit
        self.queue: asyncio.Queue = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []

    async def submit(self, images: list[np.ndarray], top_k: int) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, top_k, future))
        return await future

    async def _consume(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and sum(len(b[0]) for b in batch) < self.max_batch:
                batch.append(self.queue.get_nowait())
            batch = [b for b in batch if not b[2].done()]  # requests that timed out meanwhile
            images = [im for b in batch for im in b[0]]
            try:
                answers = await self.run(self.infer, images, max((b[1] for b in batch), default=1))
            except Exception as e:  # one bad batch must not kill the consumer
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            start = 0
            for ims, k, fut in batch:
                if not fut.done():
                    fut.set_result([self.limit(a, k) for a in answers[start:start + len(ims)]])
                start += len(ims)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._consume()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _metrics(registry):
    from prometheus_client import Counter, Gauge, Histogram

    m = {"requests": Counter("tunevision_requests", "HTTP requests by route and status", ["path", "status"],
                             registry=registry),
         "latency": Histogram("tunevision_request_seconds", "time to answer /predict", registry=registry,
                              buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)),
         "batch": Histogram("tunevision_batch_images", "images per forward pass", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64)),
         "errors": Counter("tunevision_errors", "refused or failed requests by kind", ["kind"], registry=registry),
         "inflight": Gauge("tunevision_requests_in_flight", "requests waiting or running", registry=registry)}
    Gauge("tunevision_rss_bytes", "resident memory of the server", registry=registry).set_function(rss_bytes)
    return m


class Server:
    """One served model and what its requests share: the task's service (model, input preparation, answers), the
    inference pool, the micro-batcher, the upload memory budget, the metrics and the admission count."""

    def __init__(self, service, o: ServeOptions):
        from prometheus_client import CollectorRegistry
        self.service, self.o, self.meta = service, o, service.meta
        self.pool: list[ThreadPoolExecutor] = []  # made on first use (and again after a lifespan restart)
        self.registry = CollectorRegistry()
        self.metrics = _metrics(self.registry)
        self.budget = ByteBudget(int(o.max_inflight_mb * 2**20))
        self.admitted = 0
        self.batcher = MicroBatcher(self.infer, self.on_pool, o.workers, o.max_batch, service.limit) \
            if o.batch and service.batchable else None

    def infer(self, images: list[np.ndarray], top_k: int) -> list[dict]:
        self.metrics["batch"].observe(len(images))
        return self.service.infer(images, top_k)

    def decode(self, data: bytes) -> np.ndarray | str:
        try:
            im = open_image(data, max_pixels=self.o.max_pixels, draft_size=self.service.draft_size)
        except ImageError as e:
            return str(e)
        large = im.size[0] * im.size[1] > 4_000_000
        out = self.service.prepare(im)
        del im
        if large:  # give a big decode's memory back now, not when the server next goes idle
            release_memory()
        return out

    async def on_pool(self, fn, *args):
        if not self.pool:
            self.pool.append(ThreadPoolExecutor(self.o.workers, thread_name_prefix="tunevision-infer"))
        return await asyncio.get_running_loop().run_in_executor(self.pool[0], fn, *args)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        if self.batcher:
            self.batcher.start()
        yield
        if self.batcher:
            await self.batcher.stop()
        while self.pool:
            self.pool.pop().shutdown(wait=True)

    async def answer(self, uploads: list[tuple[str, bytes]], top_k: int) -> dict:
        names, images = [name for name, _ in uploads], []
        for name, data in uploads:
            decoded = await self.on_pool(self.decode, data)
            if isinstance(decoded, str):
                raise HTTPError(400, f"{name}: {decoded}", "bad_image")
            images.append(decoded)
        del uploads  # the encoded bytes are not needed past here
        answers = await self.batcher.submit(images, top_k) if self.batcher else await self.on_pool(
            self.infer, images, top_k)
        return {"predictions": [{"filename": n, **a} for n, a in zip(names, answers)]}

    async def predict(self, request):
        from fastapi.responses import JSONResponse
        o, metrics = self.o, self.metrics
        if self.admitted >= o.queue:
            metrics["errors"].labels("overloaded").inc()
            return JSONResponse({"detail": f"busy: {self.admitted} requests queued; retry shortly"}, 503,
                                headers={"Retry-After": "1"})
        self.admitted += 1
        metrics["inflight"].set(self.admitted)
        start, reservation = time.perf_counter(), self.budget.reserve()
        try:  # the upload has its own deadline (408); answering it has timeout_s more (503)
            top_k = parse_top_k(request.query_params.get("top_k"))
            uploads = await read_images(request, max_image_bytes=int(o.max_upload_mb * 2**20), max_images=o.max_images,
                                        max_request_bytes=int(o.max_request_mb * 2**20), deadline_s=o.timeout_s,
                                        reservation=reservation)
            return await asyncio.wait_for(self.answer(uploads, top_k), o.timeout_s)
        except HTTPError as e:
            metrics["errors"].labels(e.kind).inc()
            return JSONResponse({"detail": e.reason}, e.status, headers={"Retry-After": "1"} if e.status == 503 else None)
        except asyncio.TimeoutError:
            metrics["errors"].labels("timeout").inc()
            return JSONResponse({"detail": f"not answered within {o.timeout_s:g} s; retry"}, 503,
                                headers={"Retry-After": "1"})
        finally:
            reservation.close()
            self.admitted -= 1
            metrics["inflight"].set(self.admitted)
            metrics["latency"].observe(time.perf_counter() - start)
            if self.admitted == 0:
                release_memory()


def create_app(model_path: str, options: ServeOptions | None = None, **kw):
    """The FastAPI app for a model argument (see predict.model_source); kw: ServeOptions fields. The task table
    gives the model's service; everything else here is the same for every task."""
    from fastapi import FastAPI
    o = options or ServeOptions(**kw)
    source = model_source(model_path)  # a typo is an error, never a silent ImageNet model
    server = Server(tasks.for_bundle(source).serve(source, o.runtime, o.threshold), o)
    app = FastAPI(title="tunevision", version=server.meta.tunevision_version or "0", lifespan=server.lifespan)
    add_guard(app, server)
    add_routes(app, server)
    return app


def add_guard(app, server: Server) -> None:
    """The API key check, the request id, the access log line and the request counter, on every route."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    o, metrics = server.o, server.metrics
    known = {"/predict", "/health", "/labels", "/metrics", "/"}

    @app.middleware("http")
    async def guard_and_log(request: Request, call_next):
        rid = request.headers.get("x-request-id", "")
        if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", rid):  # echoed back: only a plain token, else our own
            rid = uuid.uuid4().hex[:12]
        start = time.perf_counter()
        header = request.headers.get("authorization", "")
        if o.api_key and request.url.path not in PUBLIC_PATHS and not hmac.compare_digest(
                header.encode(), f"Bearer {o.api_key}".encode()):
            metrics["errors"].labels("unauthorized").inc()
            response = JSONResponse({"detail": "missing or wrong API key: send Authorization: Bearer KEY"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})
        else:
            response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        # one label per route, "other" for every unknown path: random paths must not grow /metrics without bound
        route = request.url.path if request.url.path in known else "other"
        metrics["requests"].labels(route, str(response.status_code)).inc()
        ACCESS_LOG.info(json.dumps({"id": rid, "method": request.method, "path": request.url.path[:200],
                                    "status": response.status_code, "ms": round((time.perf_counter() - start) * 1e3, 1),
                                    "client": request.client.host if request.client else None}))
        return response


def add_routes(app, server: Server) -> None:
    from fastapi import Request
    from fastapi.responses import HTMLResponse, Response
    from prometheus_client import generate_latest
    meta, o = server.meta, server.o

    @app.post("/predict")
    async def predict(request: Request):
        return await server.predict(request)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "task": meta.task, "model": meta.architecture, "classes": len(meta.classes),
                "image_size": meta.image_size, "runtime": o.runtime, "key_required": bool(o.api_key)}

    @app.get("/labels")
    def labels() -> list[str]:
        return meta.classes

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(server.registry), media_type="text/plain; version=0.0.4")

    page = resources.files("tunevision").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page
