"""Metrics as pure functions on labels and probabilities; `Evaluation`, the scored result; and the choice of
what to score in a dataset (`load_eval_set`)."""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tunevision.classify.inference import (
    ORT_CHUNK,
    TTA,
    fastest_exact,
    on_body_graph,
    predict_probs,
)
from tunevision.classify.multilabel import MultiLabelEvaluation
from tunevision.core.errors import TunevisionError
from tunevision.core.runtime import INFERENCE_PRECISION, Runtime, resolve_runtime
from tunevision.data.discover import discover
from tunevision.data.inputs import not_trained, trained_images
from tunevision.data.sources import Dataset, Sample, drop_skipped, load_images, relabel
from tunevision.models.bundle import BundleMeta, load_bundle


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = number of images of true class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(tp / cm.sum(0))
        recall = np.nan_to_num(tp / support)
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


@dataclass
class Evaluation:
    classes: list[str]
    labels: np.ndarray   # (N,)
    probs: np.ndarray    # (N, C)
    paths: list[str]
    seconds: float = 0.0  # inference time, when measured
    note: str = ""        # what was scored, e.g. "the validation split of photos/"

    @classmethod
    def read(cls, folder: Path, classes: list[str], temperature: float) -> "Evaluation | None":
        """The validation scores a run wrote (eval/predictions.csv and val_logits.npy), or None."""
        folder = Path(folder)
        if not (folder / "predictions.csv").is_file() or not (folder / "val_logits.npy").is_file():
            return None
        rows = list(csv.DictReader(open(folder / "predictions.csv")))
        logits = torch.from_numpy(np.load(folder / "val_logits.npy"))
        probs = torch.softmax(logits / temperature, 1).numpy()
        labels = np.array([classes.index(r["actual"]) for r in rows])
        return cls(classes, labels, probs, [r["path"] for r in rows], note=f"validation split ({folder})")

    def __repr__(self) -> str:
        """Accuracy, the per-class table and the confusion matrix as text (printable, and shown in notebooks)."""
        m = per_class_metrics(self.confusion)
        width = max([len(c) for c in self.classes] + [5])
        lines = [f"Evaluation: {len(self.labels)} images, accuracy {self.accuracy:.2%}" +
                 (f" ({self.note})" if self.note else ""),
                 f"{'class':<{width}}  precision  recall     f1  support"]
        lines += [f"{c:<{width}}  {m['precision'][i]:9.3f}  {m['recall'][i]:6.3f}  {m['f1'][i]:5.3f}  "
                  f"{int(m['support'][i]):7d}" for i, c in enumerate(self.classes)]
        if len(self.classes) <= 12:
            lines.append("confusion (rows: actual, columns: predicted)")
            lines += [f"{c:<{width}}  " + " ".join(f"{v:5d}" for v in row) for c, row in zip(self.classes,
                                                                                             self.confusion)]
        return "\n".join(lines)

    multilabel = False

    def headline(self) -> str:
        return f"accuracy {self.accuracy:.2%}"

    def summary(self) -> dict:
        return {"final_val_acc": self.accuracy}

    def per_class_lines(self) -> list[str]:
        m = per_class_metrics(self.confusion)
        return [f"  {c:>20s}  precision {m['precision'][i]:.3f}  recall {m['recall'][i]:.3f}  f1 {m['f1'][i]:.3f}  "
                f"n={int(m['support'][i])}" for i, c in enumerate(self.classes)]

    def calibration_line(self, meta, ece: tuple[float, float]) -> str:
        return f"calibration: temperature {meta.temperature:.2f}, expected calibration error {ece[0]:.3f} -> {ece[1]:.3f}"

    def most_confused(self, n: int = 5) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) of the most frequent mistakes, as fastai's Interpretation has it."""
        cm = self.confusion
        pairs = [(self.classes[i], self.classes[j], int(cm[i, j])) for i in range(len(cm)) for j in range(len(cm))
                 if i != j and cm[i, j]]
        return sorted(pairs, key=lambda t: -t[2])[:n]

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean()) if len(self.labels) else 0.0

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.labels, self.preds, len(self.classes))

    def losses(self) -> np.ndarray:
        return -np.log(np.clip(self.probs[np.arange(len(self.labels)), self.labels], 1e-12, None))

    def top_losses(self, n: int) -> list[tuple[str, str, str, float, float]]:
        """(path, actual, predicted, p(predicted), loss) for the n highest-loss images."""
        loss = self.losses()
        order = np.argsort(-loss)[:n]
        return [(self.paths[i], self.classes[self.labels[i]], self.classes[self.preds[i]],
                 float(self.probs[i, self.preds[i]]), float(loss[i])) for i in order]

    def write(self, folder: Path) -> None:
        """confusion_matrix.csv, per_class.csv and predictions.csv in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "confusion_matrix.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["actual \\ predicted", *self.classes])
            for name, row in zip(self.classes, self.confusion):
                w.writerow([name, *row.tolist()])
        m = per_class_metrics(self.confusion)
        with open(folder / "per_class.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "precision", "recall", "f1", "support"])
            for i, name in enumerate(self.classes):
                w.writerow([name, f"{m['precision'][i]:.4f}", f"{m['recall'][i]:.4f}", f"{m['f1'][i]:.4f}",
                            int(m["support"][i])])
        with open(folder / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "actual", "predicted", "confidence", "loss"])
            for p, a, pr, c, l in zip(self.paths, self.labels, self.preds, self.probs.max(1), self.losses()):
                w.writerow([p, self.classes[a], self.classes[pr], f"{c:.4f}", f"{l:.4f}"])


@dataclass
class EvalSet:
    """A dataset decoded for a model: what scoring needs, loaded once so that plain and TTA can share it."""
    model: torch.nn.Module
    meta: BundleMeta
    runtime: Runtime
    images: np.ndarray
    samples: list[Sample]
    note: str = ""  # which part of the data is scored, and why
    chunk: int | None = None  # the forward batch measured fastest here (`model`: the path measured fastest)

    def score(self, tta: TTA | None = None) -> Evaluation | MultiLabelEvaluation:
        start = time.perf_counter()
        probs = predict_probs(self.model, self.images, self.runtime, self.meta.image_size,
                              temperature=self.meta.temperatures, tta=tta, chunk=self.chunk)
        if self.meta.task == "multilabel":
            targets = np.zeros((len(self.samples), len(self.meta.classes)), np.float32)
            for row, s in enumerate(self.samples):
                targets[row, list(s.labels)] = 1
            return MultiLabelEvaluation(self.meta.classes, targets, probs, [s.path for s in self.samples],
                                        np.asarray(self.meta.thresholds), time.perf_counter() - start)
        return Evaluation(self.meta.classes, np.array([s.label for s in self.samples]), probs,
                          [s.path for s in self.samples], time.perf_counter() - start)


def _scored_samples(meta: BundleMeta, data: str) -> tuple[Dataset, list[Sample], str]:
    """The samples to score and a sentence saying which: a named validation split, else every image, less the
    images that trained the model (by the files themselves, whatever `data` is called: its folder, its CSV or JSON,
    a subfolder); a bundle from before it listed them re-draws its seeded split on the folder it trained on."""
    # a multi-label model reads its CSVs as label lists; a table's labels come from the column they trained from
    kind = {"multilabel": meta.task == "multilabel", "label_column": meta.extra.get("label_column", "")}
    trained_on, trained = meta.extra.get("data", ""), trained_images(meta.extra)
    same = bool(trained_on) and Path(data).expanduser().resolve() == Path(trained_on).resolve()
    if same and trained is None and meta.extra.get("split") == "seeded":  # a bundle from before train_files
        ds = discover(data, val_fraction=meta.extra["val_fraction"], seed=meta.extra["seed"], **kind)
        return ds, ds.val, (f"{data} trained this model: scoring only its validation split ({len(ds.val)} images, "
                            f"seed {meta.extra['seed']}); the other images were training images")
    ds = discover(data, **kind)
    samples = ds.evaluation_samples()
    note = (f"scoring the validation split of {data} ({ds.layout})" if ds.explicit_split else
            f"scoring every image of {data} (no split in the data)")
    if trained:
        held_out = [s for s, keep in zip(samples, not_trained([s.path for s in samples], trained)) if keep]
        if not held_out:
            raise TunevisionError(f"{data}: every image in it trained this model; evaluate on images it has not seen")
        if len(held_out) < len(samples):
            note = (f"{data} trained this model: scoring only the {len(held_out)} images that did not train it "
                    f"(the bundle lists its {len(trained)} training images)")
            samples = held_out
    return ds, samples, note


def load_eval_set(model: torch.nn.Module, meta: BundleMeta, data: str, runtime: Runtime, *,
                  unknown_classes: str = "error", log=None, cache: Path | None = None) -> EvalSet:
    """`data` decoded for `model`, on its fastest exact path (`cache`: the feature cache of its training run, where
    the body's ONNX graph may be). Classes the model does not know are an error naming them, or with
    unknown_classes='skip' left out and reported."""
    if unknown_classes not in ("error", "skip"):
        raise TunevisionError(f"unknown_classes must be 'error' or 'skip', got {unknown_classes!r}")
    ds, scored, note = _scored_samples(meta, data)
    unknown = sorted({ds.classes[i] for s in scored for i in (s.labels if s.labels is not None else [s.label])}
                     - set(meta.classes))
    if unknown and unknown_classes != "skip":
        raise TunevisionError(f"{data}: class(es) {', '.join(unknown)} are not among the model's classes "
                              f"({', '.join(meta.classes)}); evaluate on known classes only with "
                              "--unknown-classes skip (unknown_classes='skip')")
    if unknown and ds.multilabel:
        note += f"; left out the unknown label(s) {', '.join(unknown)}"
    elif unknown:
        n = sum(ds.classes[s.label] in unknown for s in scored)
        note += f"; skipped {n} images of unknown class(es) {', '.join(unknown)}"
    samples = relabel(scored, ds.classes, meta.classes)
    if not samples:
        raise TunevisionError(f"{data}: no images of the model's classes ({', '.join(meta.classes)})")
    images, bad = load_images(samples, meta.resize_size, cache_dir=None, arrays=ds.arrays, fit=meta.fit)
    if log:
        log.info(note)
        for b in bad:
            log.info(f"skipped {b.path}: {b.reason}")
    network = on_body_graph(model, meta.image_size, runtime, cache)
    if network is not None:
        chunk = ORT_CHUNK
        if log:
            log.info(f"scoring on onnxruntime fp32 x{chunk} (the body's graph from its training run)")
    else:
        network, chunk = fastest_exact(model, images, runtime, meta.image_size, log)
    return EvalSet(network, meta, runtime, images, drop_skipped(samples, bad), note, chunk)


def evaluate_bundle(bundle: str | Path, data: str, *, tta: TTA | None = None, device: str = "auto",
                    unknown_classes: str = "error", log=None) -> Evaluation:
    """Score a saved bundle on a dataset whose class names match the bundle's."""
    rt = resolve_runtime(device, INFERENCE_PRECISION)
    model, meta = load_bundle(bundle, rt.device)
    return load_eval_set(model, meta, data, rt, unknown_classes=unknown_classes, log=log).score(tta)
