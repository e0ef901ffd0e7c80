"""The server's options, declared once (value, help, bounds) for `tunevision serve` and `create_app`. Light on
purpose: the CLI reads them to build its flags without importing torch."""
from __future__ import annotations

from dataclasses import dataclass

from tunevision.core.config import opt, validate_fields
from tunevision.data.images import DEFAULT_MAX_PIXELS


@dataclass
class ServeOptions:
    max_upload_mb: float = opt(10.0, "largest accepted image upload, in MB", check=lambda v: 0 < v <= 1024,
                               allowed="in (0, 1024]")
    workers: int = opt(1, "inference threads (decode + forward); each may hold one decoded image",
                       check=lambda v: 1 <= v <= 64, allowed="in 1..64")
    batch: bool = opt(True, "run requests that queue up while the model is busy as one batch")
    max_pixels: int = opt(40_000_000, "largest image in pixels (checked before decoding)",
                          check=lambda v: 0 < v <= DEFAULT_MAX_PIXELS, allowed=f"in 1..{DEFAULT_MAX_PIXELS}")
    max_images: int = opt(16, "images per request", check=lambda v: 1 <= v <= 256, allowed="in 1..256")
    max_request_mb: float = opt(32.0, "largest request body, all its images together, in MB",
                                check=lambda v: 0 < v <= 4096, allowed="in (0, 4096]")
    max_inflight_mb: float = opt(256.0, "request bodies held in memory at once, all requests together, in MB; past "
                                        "it new uploads get 503", check=lambda v: 0 < v <= 65536,
                                 allowed="in (0, 65536]")
    max_batch: int = opt(32, "images per forward pass (memory: about 17 MB each for Lite0 at 224 px)",
                         check=lambda v: 1 <= v <= 256, allowed="in 1..256")
    queue: int = opt(64, "requests waiting or running before new ones get 503", check=lambda v: 1 <= v <= 10_000,
                     allowed="in 1..10000")
    timeout_s: float = opt(30.0, "seconds to receive an upload, and to answer a request",
                           check=lambda v: 0 < v <= 3600, allowed="in (0, 3600]")
    header_timeout_s: float = opt(10.0, "seconds a connection may take to send a request's headers (slow-header "
                                        "clients are closed)", check=lambda v: 0 < v <= 600, allowed="in (0, 600]")
    api_key: str = opt("", "require Authorization: Bearer KEY (also $TUNEVISION_API_KEY)")
    runtime: str = opt("torch", "torch (on a CPU its body on the ONNX graph its training run kept, where there is "
                                "one) | onnx | onnx-int8", choices=("torch", "onnx", "onnx-int8"))
    threshold: float = opt(0.5, "detectors: the lowest score returned", check=lambda v: 0 <= v <= 1,
                           allowed="in [0, 1]")

    def __post_init__(self) -> None:
        validate_fields(self)
