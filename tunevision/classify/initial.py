"""The network a classification run starts from: a pretrained backbone, or a previous run's bundle."""
from __future__ import annotations

from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.models.backbones import Backbone, Classifier, create_backbone
from tunevision.models.bundle import bundle_dir, load_bundle


def initial_model(cfg: RunConfig) -> tuple[str, Backbone, Classifier | None]:
    """(architecture, backbone, previous model). A bundle or run folder passed as --weights continues that
    run's network, whatever --backbone says; its head is reused when the classes match."""
    weights = cfg.model.weights
    if weights and cfg.train.mode != "scratch":
        try:
            folder = bundle_dir(weights)
        except TunevisionError:
            folder = None  # not a bundle: a plain state dict file, loaded below
        if folder is not None:
            prev, meta = load_bundle(folder)
            backbone = create_backbone(meta.architecture, pretrained=False)
            backbone.body, backbone.mean, backbone.std = prev.body, tuple(meta.mean), tuple(meta.std)
            return meta.architecture, backbone, prev
    pretrained = cfg.model.pretrained and cfg.train.mode != "scratch"
    weights = (weights or None) if cfg.train.mode != "scratch" else None
    return cfg.model.backbone, create_backbone(cfg.model.backbone, pretrained=pretrained, weights=weights), None
