"""`Model`: what `tunevision.fit` returns for a classifier and `tunevision.load` reads back: predict, evaluate,
interpret, save and export, as natural in a notebook as fastai's Learner."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tunevision.classify.embed import embed_images
from tunevision.classify.evaluate import Evaluation, load_eval_set
from tunevision.classify.export import export_bundle
from tunevision.classify.gradcam import gradcam
from tunevision.classify.inference import (
    TTA,
    on_body_graph,
    predict_probs,
    runs_kept_graph,
)
from tunevision.classify.multilabel import read_evaluation
from tunevision.classify.predict import (
    IMAGENET,
    Prediction,
    decode_inputs,
    load_predictor,
    predict_decoded,
    training_cache,
)
from tunevision.classify.reader import body_fingerprint
from tunevision.classify.report import top_losses_grid
from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import INFERENCE_PRECISION, Runtime, resolve_runtime
from tunevision.core.ui import RunLog
from tunevision.data.augment import make_pipeline
from tunevision.data.discover import discover
from tunevision.data.images import resolve_fit
from tunevision.data.inputs import as_list, is_single
from tunevision.data.preprocess import Preprocessing
from tunevision.data.sources import Sample, load_images
from tunevision.engine.export import Exported
from tunevision.engine.rundir import EpochRecord, read_metrics
from tunevision.models.backbones import Classifier
from tunevision.models.bundle import BundleMeta, save_bundle
from tunevision.report.plots import (
    confusion_heatmaps,
    gradcam_figure,
    image_grid,
    training_curves,
)

Image = Any  # a path, folder or glob (str/Path), a PIL image, an HxWxC array or a CxHxW tensor


class Model:
    """A trained classifier with everything needed to use it: `classes`, `preprocess` (input size, resize,
    mean/std), `temperature`, `history` (one EpochRecord per epoch), `run_dir` and `evaluation` (validation)."""

    def __init__(self, network: torch.nn.Module, meta: BundleMeta, *, run_dir: Path | None = None,
                 history: Sequence[EpochRecord] = (), evaluation: Evaluation | None = None,
                 runtime: Runtime | None = None, device: str = "auto", bundle: Path | None = None) -> None:
        self.network, self.meta = network.eval(), meta
        self.run_dir = Path(run_dir) if run_dir else None
        self.bundle = bundle or (self.run_dir / "model" if self.run_dir else None)
        self.history = list(history)
        self.runtime = runtime or resolve_runtime(device, INFERENCE_PRECISION)
        self._evaluation = evaluation
        self._graph: tuple[str, torch.nn.Module] | None = None  # (body fingerprint, the network predictions run on)

    classes = property(lambda self: list(self.meta.classes))
    preprocess = property(lambda self: self.meta.preprocess)
    temperature = property(lambda self: self.meta.temperature)

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        acc = f", val_acc={self._evaluation.accuracy:.4f}" if self._evaluation is not None else ""
        return (f"Model({self.meta.architecture}, {len(self.classes)} classes, {self.meta.image_size}px, "
                f"mode={self.meta.mode!r}{acc}{where})")

    # --- prediction -------------------------------------------------------------------------------------------
    def _scorer(self) -> torch.nn.Module:
        """The network predictions run on: on a CPU in fp32, its body on the ONNX graph its training run kept
        (`inference.on_body_graph`), looked up again whenever the body's weights or statistics change (10 ms to
        fingerprint Lite0's); else the network itself."""
        if not (runs_kept_graph(self.runtime) and self.run_dir is not None and isinstance(self.network, Classifier)):
            return self.network  # no fingerprint to take
        key = body_fingerprint(self.network)
        if self._graph is None or self._graph[0] != key:
            graph = on_body_graph(self.network, self.meta.image_size, self.runtime, self.training_cache())
            self._graph = (key, graph or self.network)
        return self._graph[1]

    def _probs(self, squares: list[np.ndarray], tta: bool | TTA) -> np.ndarray:
        if not squares:
            return np.zeros((0, len(self.classes)), np.float32)
        return predict_probs(self._scorer(), np.stack(squares), self.runtime, self.meta.image_size,
                             temperature=self.meta.temperatures, tta=as_tta(tta))

    def predict_proba(self, inputs: Image | Sequence[Image], *, tta: bool | TTA = False) -> np.ndarray:
        """Calibrated probabilities, one row per image the inputs stand for. An unreadable file raises
        TunevisionError naming it (a row of NaN would pass unnoticed into sums and argmaxes); `predict` instead
        flags such an image with its `error` and goes on."""
        names, items = decode_inputs(as_list(inputs), self.preprocess)
        bad = next(((n, it) for n, it in zip(names, items) if isinstance(it, str)), None)
        if bad:
            raise TunevisionError(f"{bad[0]}: {bad[1]}; predict_proba needs every image readable (predict() flags "
                                  "unreadable ones and goes on)")
        ok = [i for i, it in enumerate(items) if not isinstance(it, str)]
        probs = np.full((len(items), len(self.classes)), np.nan, np.float32)
        if ok:
            probs[ok] = self._probs([items[i] for i in ok], tta)
        return probs

    def predict(self, inputs: Image | Sequence[Image], *, top_k: int = 3, tta: bool | TTA = False,
                threshold: float | None = None) -> Prediction | list[Prediction]:
        """One Prediction (label, prob, top) for one image; a list for a list, a folder or a glob. A multi-label
        model's Prediction also has `labels` (those at or above their thresholds, or `threshold`) and `probs`."""
        names, items = decode_inputs(as_list(inputs), self.preprocess)
        preds = predict_decoded(self._scorer(), self.meta, names, items, self.runtime, top_k=top_k, tta=as_tta(tta),
                                threshold=threshold)
        return preds[0] if is_single(inputs) and len(preds) == 1 else preds

    def embed(self, inputs: Image | Sequence[Image]) -> np.ndarray:
        """(N, features) pooled features of the network's body, one row per image: what `tunevision embed RUN`
        writes and `tunevision similar` searches (cosine)."""
        names, items = decode_inputs(as_list(inputs), self.preprocess)
        bad = next(((n, it) for n, it in zip(names, items) if isinstance(it, str)), None)
        if bad:
            raise TunevisionError(f"{bad[0]}: {bad[1]}; embed needs every image readable")
        network = self._torch_network()
        if not items:
            return np.zeros((0, network.head.in_features), np.float32)
        return embed_images(network, self.meta, np.stack(items), device=str(self.runtime.device))

    # --- evaluation and interpretation -------------------------------------------------------------------------
    def evaluate(self, data: str | Path, *, tta: bool | TTA = False, unknown_classes: str = "error",
                 quiet: bool = True) -> Evaluation:
        """Accuracy, per-class metrics and confusion on `data` (class folders, CSV, ...); it becomes `evaluation`.
        The model's own training folder is scored on its validation split only."""
        eval_set = load_eval_set(self.network, self.meta, str(data), self.runtime, unknown_classes=unknown_classes,
                                 log=None if quiet else RunLog(), cache=self.training_cache())
        self._evaluation = eval_set.score(as_tta(tta))
        self._evaluation.note = eval_set.note
        return self._evaluation

    def training_cache(self) -> Path | None:
        """The feature cache of the run that trained this model, where the ONNX graph of its body may be kept."""
        return training_cache(self.run_dir) if self.run_dir else None

    def use_evaluation(self, evaluation: Evaluation) -> None:
        """Make `evaluation` (scored elsewhere, e.g. with TTA by the CLI) the one the plots below read."""
        self._evaluation = evaluation

    @property
    def evaluation(self) -> Evaluation | None:
        """The latest evaluation: `evaluate`'s, else the run's own validation scores."""
        if self._evaluation is None and self.run_dir is not None:
            self._evaluation = (read_evaluation(self.run_dir / "eval", self.classes, self.meta.thresholds)
                                if self.meta.task == "multilabel" else
                                Evaluation.read(self.run_dir / "eval", self.classes, self.temperature))
        return self._evaluation

    def _require_evaluation(self) -> Evaluation:
        if self.evaluation is None:
            raise TunevisionError("no evaluation yet: call model.evaluate(data) first")
        return self.evaluation

    def plot_confusion(self):
        """Confusion matrix heat maps (counts and row-normalised) of the latest evaluation."""
        ev = self._require_evaluation()
        return confusion_heatmaps(ev.confusion, ev.classes)

    def plot_top_losses(self, k: int = 8):
        """The k images the model got most wrong (actual / predicted / probability), with Grad-CAM."""
        rows = [(p, a, pr, prob) for p, a, pr, prob, _ in self._require_evaluation().top_losses(k)]
        return top_losses_grid(self._torch_network(), self.meta, rows)

    def gradcam(self, image: Image, class_name: str | None = None):
        """Where the network looked for `class_name` (default: its prediction) in one image."""
        if class_name is not None and class_name not in self.classes:
            raise TunevisionError(f"class {class_name!r} is not one of {', '.join(self.classes)}")
        names, items = decode_inputs([image], self.preprocess)
        if isinstance(items[0], str):
            raise TunevisionError(f"{names[0]}: {items[0]}")
        network = self._torch_network()
        heat, c = gradcam(network, self.preprocess.batch(torch.from_numpy(items[0][None])),
                          self.classes.index(class_name) if class_name else None)
        prob = self._probs([items[0]], False)[0, c]
        return gradcam_figure(self.preprocess.crop(items[0]), heat, f"{self.classes[c]}  p = {prob:.2f}")

    def plot_history(self):
        """Loss, accuracy, learning rate and seconds per epoch of the training run."""
        if not self.history:
            raise TunevisionError("this model has no training history (it was not trained in this run folder)")
        series = {k: np.array([getattr(r, k) for r in self.history]) for k in EpochRecord.__dataclass_fields__}
        return training_curves(series.pop("epoch"), series)

    def show_batch(self, data: str | Path | None = None, *, n: int = 8, augment: str | None = None, seed: int = 0):
        """A training batch as the network sees it: augmented views, titled with their class. Without `data`,
        the run's own training images and augmentation."""

        if data is not None:
            return show_batch(data, augment=augment or "default", size=self.meta.image_size, n=n, seed=seed)
        if self.run_dir is None:
            raise TunevisionError("show_batch needs data=... for a model without its run folder")
        rows = [r for r in csv.DictReader(open(self.run_dir / "split.csv")) if r["split"] == "train"]
        samples = [Sample(r["path"], self.classes.index(r["label"])) for r in rows]
        augment = augment or RunConfig.load(self.run_dir / "config.yaml").train.augment
        return batch_grid(samples, self.classes, None, self.preprocess, augment, n, seed)

    # --- saving and export -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the bundle (model.safetensors + model.json) to a folder; `tunevision.load` reads it back."""
        return save_bundle(self._torch_network(), self.meta, Path(path).expanduser())

    def export(self, fmt: str = "onnx", out: str | Path | None = None, samples: list[str] | None = None) -> Exported:
        """ONNX or TorchScript, checked against PyTorch on sample images (raises if they disagree)."""
        if self.bundle is None:
            self.bundle = self.save(Path(out or ".") / "bundle")
        path, parity = export_bundle(self.bundle, fmt, out, samples)
        return Exported(path, parity)

    def _torch_network(self) -> torch.nn.Module:
        if not isinstance(self.network, Classifier):
            raise TunevisionError("this is an exported ONNX model: it predicts, but Grad-CAM, saving and export need "
                                  "the bundle it came from (tunevision.load(RUN_DIR))")
        return self.network


def batch_grid(samples, classes: list[str], arrays, prep, augment: str, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    pick = [samples[i] for i in torch.randperm(len(samples), generator=g)[:n].tolist()]
    images, bad = load_images(pick, prep.resize_size, cache_dir=None, arrays=arrays, fit=prep.fit)
    titles = [classes[s.label] for s in pick if s.path not in {b.path for b in bad}]
    views = make_pipeline(augment, prep.image_size)(torch.from_numpy(np.array(images)), g)
    return image_grid(list(to_uint8(views)), titles)


def as_tta(tta: bool | TTA) -> TTA | None:
    return tta if isinstance(tta, TTA) else (TTA() if tta else None)


def to_uint8(views: torch.Tensor) -> np.ndarray:
    return (views.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def show_batch(data: str | Path, *, augment: str = "default", size: int = 224, n: int = 8, seed: int = 0):
    """n training images of `data` under the augmentation pipeline, titled with their class."""
    ds = discover(str(data), seed=seed)
    prep = Preprocessing.for_size(size, 0.875, fit=resolve_fit("auto", ds.multilabel))
    return batch_grid(ds.train, ds.classes, ds.arrays, prep, augment, n, seed)


def load_model(source: str, device: str = "auto") -> Model:
    """A classifier from a bundle, a run folder, an exported .onnx or `imagenet` (already resolved by
    `model_source`)."""
    onnx = source.endswith(".onnx")
    rt = resolve_runtime("cpu" if onnx else device, INFERENCE_PRECISION)
    network, meta = load_predictor(source, rt.device)
    run_dir = Path(source).parent if (Path(source).name == "model" and (Path(source).parent / "config.yaml")
                                      .is_file()) else None
    return Model(network, meta, run_dir=run_dir, history=read_metrics(run_dir) if run_dir else [],
                 runtime=rt, bundle=None if onnx or source == IMAGENET else Path(source))


def model_from_result(result, cfg: RunConfig) -> Model | None:
    """The Model of a finished `fit`; None under torchrun on ranks other than 0, which hold no calibrated model."""
    if result.model is None:
        return None
    return Model(result.model, result.meta, run_dir=result.run_dir, history=result.history,
                 evaluation=result.evaluation, device=cfg.train.device)
