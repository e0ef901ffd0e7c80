"""tunevision: transfer learning on images, from a folder of photos to a model you can predict with.

    import tunevision as tv
    model = tv.fit("photos/")        # photos/<class>/*.jpg; returns a Model
    model.predict("cat.jpg")         # Prediction(label=..., prob=..., top=[...])

Public names are imported on first use, so `import tunevision` stays cheap (torch loads when it is needed).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "api", "audit": "api", "load": "api", "preview": "api", "show_batch": "api", "lr_find": "api",
    "Model": "api", "LRFind": "api", "AuditResult": "classify.audit",
    "Exported": "engine.export", "Prediction": "classify.predict", "Evaluation": "classify.evaluate", "TTA": "classify.inference",
    "RunConfig": "core.config", "DataConfig": "core.config", "ModelConfig": "core.config", "TrainConfig": "core.config",
    "TunevisionError": "core.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'tunevision' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
