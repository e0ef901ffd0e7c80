"""Embeddings for the user's own search: the audit's features of a dataset (pretrained body) or a trained
bundle's features of any images, written as npy or parquet with their paths; nearest images as a contact sheet."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tunevision.auditing.labels import normalised
from tunevision.classify.audit import audit_features, pretrained
from tunevision.classify.features import cached_features, extract
from tunevision.classify.reader import body_fingerprint
from tunevision.core.atomic import atomic_write
from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import INFERENCE_PRECISION, resolve_runtime
from tunevision.core.ui import RunLog
from tunevision.data.discover import discover
from tunevision.data.sources import cache_key, load_images
from tunevision.models.backbones import Classifier
from tunevision.models.bundle import BundleMeta
from tunevision.report.plots import image_grid


@dataclass
class Embeddings:
    paths: list[str]
    features: np.ndarray  # (N, D) float32, one row per path
    images: np.ndarray | None = None  # the decoded squares (possibly memory-mapped), for contact sheets
    rows: list[int] | None = None     # each path's row in `images`

    def image(self, i: int) -> np.ndarray:
        return np.asarray(self.images[self.rows[i] if self.rows is not None else i])


def embed_data(cfg: RunConfig, log: RunLog) -> Embeddings:
    """The pretrained body's eval-view features of every usable image of the data: the audit's, from its cache."""
    cfg, data, model, rt = pretrained(cfg, log)
    return Embeddings([s.path for s in data.train + data.val], audit_features(model, data, cfg, rt, log)[0])


def embed_images(model: Classifier, meta: BundleMeta, squares: np.ndarray, *, device: str = "auto",
                 progress=None) -> np.ndarray:
    """A bundle's pooled features of decoded squares, in the fp32 precision predict uses."""
    rt = resolve_runtime(device, INFERENCE_PRECISION)
    model = model.to(rt.device).eval()
    return extract(model.forward_features, squares, lambda b, i: meta.preprocess.batch(b), rt,
                   progress=progress).numpy()


def embed_folder(model: Classifier, meta: BundleMeta, data: str, log: RunLog, cache: str | None = None
                 ) -> Embeddings:
    """A bundle's features of every image `data` names (all splits), cached by weights and images."""
    ds = discover(data, multilabel=meta.task == "multilabel", label_column=meta.extra.get("label_column", ""))
    samples = sorted(ds.train + ds.val, key=lambda s: s.path)
    folder = Path(cache).expanduser() if cache else None
    with log.progress(len(samples), "decoding images") as advance:
        images, bad = load_images(samples, meta.resize_size, cache_dir=folder, arrays=ds.arrays, fit=meta.fit,
                                  progress=advance)
    dropped = {b.path for b in bad}
    keep = [i for i, s in enumerate(samples) if s.path not in dropped]
    key = [body_fingerprint(model), str(model.head.weight.shape),
           cache_key(samples, meta.resize_size, ds.arrays, meta.fit), str(meta.image_size), "bundle-embed"]
    with log.progress(len(keep), "features") as advance:
        feats = cached_features(folder, key, lambda: torch.from_numpy(
            embed_images(model, meta, np.asarray(images)[keep], progress=advance)), log=log)
    return Embeddings([samples[i].path for i in keep], feats.numpy(), images, keep)


def write_embeddings(emb: Embeddings, out: str | Path) -> list[Path]:
    """FILE.npy (+ FILE.paths.txt, one path per row) or FILE.parquet (columns path, embedding)."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise TunevisionError(f"{out}: parquet needs pyarrow (pip install pyarrow), or write .npy") from None
        table = pa.table({"path": emb.paths, "embedding": list(emb.features.astype(np.float32))})
        atomic_write(out, lambda p: pq.write_table(table, str(p)))
        return [out]
    if out.suffix != ".npy":
        raise TunevisionError(f"{out}: write embeddings to a .npy or .parquet file")
    names = out.with_suffix(".paths.txt")
    def save(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: np.save would add .npy to the temp file's name
            np.save(f, emb.features.astype(np.float32), allow_pickle=False)
    atomic_write(out, save)
    atomic_write(names, lambda p: p.write_text("".join(f"{x}\n" for x in emb.paths)))
    return [out, names]


def nearest(query: np.ndarray, emb: Embeddings, top_k: int) -> list[tuple[int, float]]:
    """(row, cosine similarity) of the `top_k` rows closest to `query`, closest first."""
    sims = normalised(emb.features) @ normalised(query[None])[0]
    order = np.argsort(-sims)[:top_k]
    return [(int(i), float(sims[i])) for i in order]


def contact_sheet(query: np.ndarray, emb: Embeddings, hits: list[tuple[int, float]], path: Path) -> Path:
    """The query, then its nearest images with their similarity, on one PNG."""
    images = [query] + [emb.image(i) for i, _ in hits]
    titles = ["query"] + [f"{Path(emb.paths[i]).name} {s:.3f}" for i, s in hits]
    image_grid(images, titles, path, columns=min(5, len(images)))
    return path


def bundle_data(meta: BundleMeta, data: str | None, what: str) -> str:
    """The images a bundle's command reads: `data`, else the data the bundle trained on."""
    data = data or meta.extra.get("data")
    if not data:
        raise TunevisionError(f"{what}: this bundle does not record its training data; name the images with --in DATA")
    return data


def similar(model: Classifier, meta: BundleMeta, image: str, data: str, top_k: int, sheet: Path | None,
            log: RunLog, cache: str | None = "~/.cache/tunevision") -> list[tuple[str, float]]:
    """The `top_k` images of `data` nearest to `image` in the bundle's feature space, as (path, cosine); with
    `sheet`, also a contact sheet PNG there."""
    try:
        query = meta.preprocess.decode(image)
    except Exception as e:  # ImageError, OSError: the query is the user's file; say which and why
        raise TunevisionError(f"{image}: cannot read the query image ({e})") from None
    emb = embed_folder(model, meta, data, log, cache)
    if not emb.paths:
        raise TunevisionError(f"{data}: no readable images to search")
    hits = nearest(embed_images(model, meta, query[None])[0], emb, top_k)
    if sheet is not None:
        contact_sheet(query, emb, hits, sheet)
    return [(emb.paths[i], s) for i, s in hits]
