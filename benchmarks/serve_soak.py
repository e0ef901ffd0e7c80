"""Soak test of `tunevision serve` on 127.0.0.1 only: thousands of mixed requests from 20 clients, bounded in
count and time, repeated in rounds to show that memory does not grow.

    python benchmarks/serve_soak.py [--model RUN_OR_BUNDLE] [--requests 1000] [--rounds 3] [--clients 20]

The mix: valid photos (most requests), large valid images near the pixel limit, random bytes, truncated JPEGs,
decompression bombs, wrong content types, empty bodies, slow uploads (which the server cuts off with 408), bodies
declared larger than the request limit (413 at once), random paths (404, and one metrics label for all of them)
and slow-header clients (closed by the server after --header-timeout-s).
Reports requests/s, latency percentiles of the valid photos, every status code count (5xx must be 0, except
503 when the queue is full, which is by design) and RSS at start, peak and end of each round. The section
"Soak" of benchmarks/results/serve.md is replaced with the result.
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import platform
import random
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serve_load import photo_bytes, start_server  # noqa: E402

MAX_PIXELS = 40_000_000  # the server's default pixel limit


def payloads() -> dict[str, tuple[str, bytes]]:
    """name -> (content type, body) for each kind of request in the mix."""
    from PIL import Image
    from tests.test_images import _png_header_only
    photo = photo_bytes()
    big = io.BytesIO()
    Image.new("RGB", (6000, 6000), (40, 120, 200)).save(big, "PNG")  # 36 MP: under the limit, 108 MB decoded
    rng = np.random.default_rng(0)
    return {"photo": ("image/jpeg", photo), "large": ("image/png", big.getvalue()),
            "random": ("image/jpeg", rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()),
            "truncated": ("image/jpeg", photo[: len(photo) // 3]), "bomb": ("image/png", _png_header_only(30000, 30000)),
            "wrong_type": ("text/plain", b"hello"), "empty": ("image/jpeg", b""), "slow": ("image/jpeg", photo),
            "oversize": ("image/jpeg", b"\xff" * 2**20), "random_path": ("", b""), "slow_header": ("", b"")}


MIX = ["photo"] * 70 + ["large"] * 3 + ["random"] * 5 + ["truncated"] * 5 + ["bomb"] * 3 + ["wrong_type"] * 5 + \
      ["empty"] * 5 + ["slow"] * 1 + ["oversize"] * 2 + ["random_path"] * 5 + ["slow_header"] * 1
EXPECTED_CLOSE = {"slow_header"}  # kinds the server should hang up on without an answer (status 0)


def send_kind(port: int, kind: str, ctype: str, body: bytes) -> int:
    if kind == "random_path":
        return get(port, f"/p{random.randrange(10**9)}")
    if kind == "slow_header":
        return slow_header(port)
    if kind == "oversize":  # declares 40 MB, over the 32 MB request limit: refused from the header alone
        return send(port, ctype, body, slow=False, declared=40 * 2**20)
    return send(port, ctype, body, slow=kind == "slow")


def get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return status_of(s)


def slow_header(port: int, seconds: float = 30) -> int:
    """Header bytes one at a time, 0.5 s apart, never a whole request line: 0 when the server hangs up first."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        start = time.perf_counter()
        try:
            for byte in b"POST /predict HTTP/1.1"[:int(seconds / 0.5)]:
                s.sendall(bytes([byte]))
                time.sleep(0.5)
                if time.perf_counter() - start > seconds:
                    break
        except OSError:
            return 0
        return status_of(s)


def status_of(s: socket.socket) -> int:
    reply = b""
    try:
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    except OSError:
        return 0
    try:
        return int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def send(port: int, ctype: str, body: bytes, slow: bool, declared: int | None = None) -> int:
    """One POST /predict over a raw socket (so a slow upload really dribbles); returns the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        length = len(body) if declared is None else declared
        head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {length}"
                "\r\nConnection: close\r\n\r\n").encode()
        s.sendall(head)
        try:
            if slow:  # a client that sends 1 KB every 0.5 s: the server's upload deadline must cut it off
                for i in range(0, len(body), 1024):
                    s.sendall(body[i:i + 1024])
                    time.sleep(0.5)
            else:
                s.sendall(body)
        except OSError:
            pass  # the server answered (408/413) and closed before the body was complete
        return status_of(s)  # 0: the connection dropped without an answer


def metrics(url: str) -> str:
    return urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()


def rss(url: str) -> float:
    return float(next(line.split()[1] for line in metrics(url).splitlines() if line.startswith("tunevision_rss_bytes")))


def soak_round(port: int, url: str, bodies: dict, n: int, clients: int, deadline_s: float, seed: int) -> dict:
    kinds = random.Random(seed).choices(MIX, k=n)
    statuses: collections.Counter = collections.Counter()
    latencies: list[float] = []
    lock, cursor, peak, metrics_start = threading.Lock(), iter(range(n)), [rss(url)], len(metrics(url))
    start, stop_at = time.perf_counter(), time.perf_counter() + deadline_s

    def client() -> None:
        while time.perf_counter() < stop_at:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            kind = kinds[i]
            t = time.perf_counter()
            code = send_kind(port, kind, *bodies[kind])
            with lock:
                statuses[(kind, code)] += 1
                if kind == "photo" and code == 200:
                    latencies.append(time.perf_counter() - t)

    def watch() -> None:
        while any(th.is_alive() for th in threads):
            peak.append(rss(url))
            time.sleep(0.1)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start_rss = peak[0]
    for th in threads:
        th.start()
    watch()
    wall = time.perf_counter() - start
    time.sleep(1.0)
    return {"statuses": statuses, "latencies": np.array(latencies) * 1000, "wall": wall,
            "requests": sum(statuses.values()), "rss": (start_rss, max(peak), rss(url)),
            "metrics_bytes": (metrics_start, len(metrics(url)))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--deadline", type=float, default=240, help="seconds per round at most")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.md"))
    args = ap.parse_args()
    server_args = ["--timeout-s", "5", "--queue", "64", "--workers", "1", "--header-timeout-s", "5"]
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, port = start_server(args.model, Path(tmp), *server_args)
        try:
            bodies = payloads()
            # warm-up: full batches of photos, so that the start RSS includes the model's inference buffers
            warm = [threading.Thread(target=send, args=(port, *bodies["photo"], False)) for _ in range(40)]
            for th in warm:
                th.start()
            for th in warm:
                th.join()
            rounds = [soak_round(port, url, bodies, args.requests, args.clients, args.deadline, seed)
                      for seed in range(args.rounds)]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(report(rounds, args, server_args))
    write_section(Path(args.out), report(rounds, args, server_args))
    if any(code >= 500 and code != 503 or code == 0 and kind not in EXPECTED_CLOSE
           for r in rounds for (kind, code) in r["statuses"]):
        sys.exit(1)


def report(rounds: list[dict], args, server_args: list[str]) -> str:
    mb = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    # workers=1, max_batch=32, Lite0 at 224 px (about 17 MB of activations per image), plus the uploads held in
    # memory (at most --max-inflight-mb, 256 MB by default): see tunevision/serve/app.py
    bound = 32 * 17 * 2**20 + 8 * MAX_PIXELS + 256 * 2**20 + 64 * 2**20
    lines = ["## Soak", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}. Command: "
             f"`python benchmarks/serve_soak.py --requests {args.requests} --rounds {args.rounds} --clients "
             f"{args.clients}`; server flags `{' '.join(server_args)}`; model: Lite0 (ImageNet bundle) unless --model.",
             "", "| round | requests | wall s | requests/s | photo p50 ms | p95 ms | p99 ms | RSS start / peak / end MB |"
             " /metrics bytes start / end |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(rounds, 1):
        lat = r["latencies"] if len(r["latencies"]) else np.zeros(1)
        lines.append(f"| {i} | {r['requests']} | {r['wall']:.0f} | {r['requests'] / r['wall']:.1f} | "
                     f"{np.percentile(lat, 50):.0f} | {np.percentile(lat, 95):.0f} | {np.percentile(lat, 99):.0f} | "
                     f"{' / '.join(mb(v) for v in r['rss'])} | {' / '.join(map(str, r['metrics_bytes']))} |")
    total: collections.Counter = collections.Counter()
    for r in rounds:
        total.update(r["statuses"])
    lines += ["", "Status codes by kind of request, all rounds together:", "", "| kind | status | count |",
              "| --- | --- | --- |"]
    lines += [f"| {kind} | {code} | {n} |" for (kind, code), n in sorted(total.items())]
    peak_growth = max(r["rss"][1] for r in rounds) - rounds[0]["rss"][0]
    lines += ["", f"Peak RSS growth over the start of round 1 (after a warm-up of full batches): {mb(peak_growth)} MB; "
              "the stated bound for one worker "
              f"(a batch of 32 x 17 MB + 8 bytes x {MAX_PIXELS / 1e6:.0f} MP + 256 MB of uploads in flight + 64 MB) is "
              f"{mb(bound)} MB. "
              "End-of-round RSS shows whether memory grows across rounds. 5xx other than "
              f"503 (queue full, by design): {sum(n for (_, c), n in total.items() if c >= 500 and c != 503)}.", ""]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.is_file() else "# Serving\n\n"
    head = text.split("## Soak")[0].rstrip() + "\n\n"
    path.write_text(head + section)


if __name__ == "__main__":
    main()
