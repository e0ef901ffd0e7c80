"""Load test of `tunevision serve` on loopback: N requests from C concurrent clients, bounded in time.

    python benchmarks/serve_load.py [--model RUN_OR_BUNDLE] [--requests 500] [--clients 20]

Without --model, serves the offline Lite0 ImageNet classifier saved as a bundle. Writes
benchmarks/results/serve.md with requests/s, latency percentiles and the error count.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo_bytes() -> bytes:
    import skimage.data
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def start_server(model: str | None, tmp: Path, *args: str) -> tuple[subprocess.Popen, str, int]:
    """`tunevision serve` on a free loopback port, ready (its /health answers): (process, base url, port). Without a
    model, the offline Lite0 ImageNet classifier saved as a bundle in `tmp`."""
    if not model:
        from tunevision.models.bundle import save_bundle
        from tunevision.classify.predict import imagenet_model
        net, meta = imagenet_model()
        model = str(save_bundle(net, meta, Path(tmp) / "lite0-imagenet"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunevision", "serve", model, "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return proc, base, port


async def hammer(url: str, body: bytes, n: int, clients: int, deadline_s: float) -> tuple[list[float], int, float]:
    import httpx
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    stop_at = time.perf_counter() + deadline_s

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty() and time.perf_counter() < stop_at:
            queue.get_nowait()
            t = time.perf_counter()
            try:
                r = await http.post(url, files={"files": ("cat.jpg", body, "image/jpeg")})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            errors += not ok

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--no-batch", action="store_true", help="one request per forward pass (2 slots)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base, _ = start_server(args.model, Path(tmp), *(["--no-batch", "--workers", "2"] if args.no_batch else []))
        try:
            lat, errors, wall = asyncio.run(hammer(base + "/predict", photo_bytes(), args.requests, args.clients, 300))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    ms = np.array(lat) * 1000
    lines = ["# Serving load test (loopback)", "",
             f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores; {time.strftime('%Y-%m-%d')}. "
             f"Model: {Path(args.model).name if args.model else 'Lite0 ImageNet bundle'}; one 451x300 JPEG per request.",
             f"Command: `python benchmarks/serve_load.py --requests {args.requests} --clients {args.clients}`.", "",
             "| requests | clients | requests/s | p50 ms | p95 ms | p99 ms | errors |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| {len(lat)} | {args.clients} | {len(lat) / wall:.1f} | {np.percentile(ms, 50):.0f} | "
             f"{np.percentile(ms, 95):.0f} | {np.percentile(ms, 99):.0f} | {errors} |"]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
