"""The request dialects `POST /predict` understands, read with hard limits on size and time.

  multipart/form-data         one or more fields `file` or `files` (curl -F file=@x.jpg, browsers, requests)
  image/*, application/octet-stream   the raw image bytes as the body (curl --data-binary @x.jpg)
  application/json            {"image": BASE64} or {"images": [BASE64, ...]} (a data: URL prefix is accepted)

Every problem is an `HTTPError` with a status and a reason: 400 bad or empty data, 408 an upload slower than
the deadline, 413 too large, 415 a content type none of the above. The body is read in full (bounded) before
anything is decoded, so a slow client never holds an inference worker.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re


class HTTPError(Exception):
    def __init__(self, status: int, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.kind = status, reason, kind


class ByteBudget:
    """Bytes of request bodies held in memory at once, all requests together: a burst of large uploads gets 503s
    instead of taking the server's memory. One event loop reads every body, so no lock is needed."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def reserve(self) -> "Reservation":
        return Reservation(self)


class Reservation:
    """One request's share of the budget; `close` (in a finally) gives it back."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget, self.held = budget, 0

    def take(self, n: int) -> None:
        if self.budget.used + n > self.budget.limit:
            raise HTTPError(503, f"busy: {self.budget.used / 2**20:.0f} MB of uploads in memory; retry shortly",
                            "overloaded")
        self.budget.used += n
        self.held += n

    def close(self) -> None:
        self.budget.used -= self.held
        self.held = 0


async def read_body(request, limit: int, deadline_s: float, reservation: Reservation | None = None) -> bytes:
    """The whole body, refused past `limit` bytes (413), `deadline_s` seconds (408) or the server's memory budget
    for uploads (503)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"request of {int(declared) / 2**20:.1f} MB is over the {limit / 2**20:.1f} MB limit",
                        "too_large")
    chunks, size = [], 0

    async def consume() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request over the {limit / 2**20:.1f} MB limit", "too_large")
            if reservation is not None:
                reservation.take(len(chunk))
            chunks.append(chunk)
    try:
        await asyncio.wait_for(consume(), deadline_s)
    except asyncio.TimeoutError:
        raise HTTPError(408, f"upload not complete within {deadline_s:g} s", "timeout") from None
    return b"".join(chunks)


def _b64(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise HTTPError(400, f"{where} must be a base64 string", "bad_request")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, f"{where} is not valid base64", "bad_request") from None


async def read_images(request, *, max_image_bytes: int, max_images: int, max_request_bytes: int, deadline_s: float,
                      reservation: Reservation | None = None) -> list[tuple[str, bytes]]:
    """(name, encoded bytes) for each image in the request, whatever its dialect."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = min(max_image_bytes * max_images, max_request_bytes) + 65536  # the images plus multipart/JSON framing
    if ctype == "application/json":
        limit = limit * 4 // 3 + 1024            # base64 is 4/3 of the bytes
    body = await read_body(request, limit, deadline_s, reservation)
    if not body:
        raise HTTPError(400, "empty request: send an image as multipart field 'file', as the raw body "
                             "(Content-Type image/*), or as JSON {\"image\": BASE64}", "bad_request")
    if ctype == "multipart/form-data":
        request._body = body  # starlette parses the form from the body already read
        try:
            form = await request.form(max_files=max_images, max_fields=16)
        except Exception as e:  # python-multipart / starlette raise several types for malformed bodies
            raise HTTPError(400, f"malformed multipart body ({str(e)[:120]})", "bad_request") from None
        uploads = form.getlist("file") + form.getlist("files")
        if not uploads:
            raise HTTPError(400, "multipart body without a 'file' or 'files' field", "bad_request")
        images = []
        for u in uploads:
            if isinstance(u, str):
                raise HTTPError(400, "the 'file' field must be a file upload, not text", "bad_request")
            images.append((u.filename or "upload", await u.read()))
            await u.close()
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        images = [("body", body)]
    elif ctype == "application/json":
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: brackets nested thousands deep
            raise HTTPError(400, "malformed JSON body", "bad_request") from None
        if not isinstance(obj, dict) or not ({"image", "images"} & set(obj)):
            raise HTTPError(400, "JSON body must be {\"image\": BASE64} or {\"images\": [BASE64, ...]}",
                            "bad_request")
        items = [obj["image"]] if "image" in obj else obj["images"]
        if not isinstance(items, list):
            raise HTTPError(400, "\"images\" must be a list of base64 strings", "bad_request")
        images = [(f"image {i}", _b64(v, f"image {i}")) for i, v in enumerate(items)]
    else:
        raise HTTPError(415, f"unsupported Content-Type {ctype or '(none)'!r}: send multipart/form-data (field "
                             "'file'), image/* or application/octet-stream, or application/json", "unsupported_type")
    if not images or len(images) > max_images:
        raise HTTPError(400 if not images else 413, f"{len(images)} images; send 1 to {max_images}", "bad_request")
    for name, data in images:
        if not data:
            raise HTTPError(400, f"{name}: empty image", "bad_request")
        if len(data) > max_image_bytes:
            raise HTTPError(413, f"{name}: larger than {max_image_bytes / 2**20:.1f} MB", "too_large")
    return images


def parse_top_k(raw: str | None, default: int = 3) -> int:
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,4}", raw.strip()) or not 1 <= int(raw) <= 1000:  # ASCII digits: '²'.isdigit()
        raise HTTPError(422, f"top_k must be an integer from 1 to 1000, got {raw!r}", "bad_request")
    return int(raw)
