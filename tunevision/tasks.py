"""The task table (Ultralytics' idea): which task a dataset or a bundle is, and what each task brings.

Every caller that has to tell a classifier from a detector (the CLI, the Python API, serve, report, export)
asks here, so a new task is one more row and its own package, never another `if task == ...` elsewhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tunevision.classify.audit import audit as audit_data
from tunevision.classify.export import export_bundle
from tunevision.classify.model import load_model, model_from_result
from tunevision.classify.predict import IMAGENET
from tunevision.classify.report import write_report
from tunevision.classify.serving import classifier_service
from tunevision.classify.train import fit as fit_classifier
from tunevision.core.allocator import keep_freed_memory
from tunevision.core.config import RunConfig
from tunevision.core.errors import TunevisionError
from tunevision.core.registry import Registry
from tunevision.core.ui import RunLog
from tunevision.data.discover import task_name_for_data
from tunevision.models.bundle import read_meta
from tunevision.scene.api import load_scene_model, scene_model_from_result
from tunevision.scene.export import export_scene_bundle
from tunevision.scene.serving import scene_service
from tunevision.scene.train import rewrite_scene_report, run_scene


@dataclass(frozen=True)
class Task:
    name: str
    fit: Callable[[RunConfig, RunLog, Path | None], Any]  # train in a run folder; returns the task's result
    wrap: Callable[[Any, RunConfig], Any]                  # that result as the Python API's model object
    load: Callable[[str, str], Any]                        # (bundle, device) -> the same model object
    report: Callable[[Path], Path]                         # (re)write a finished run's report.html
    export: Callable[..., Any]                             # (bundle, fmt, out_dir, samples) -> (path, parity)
    serve: Callable[[str, str, float], Any]                # (bundle, runtime, threshold) -> the server's service


TASKS: Registry = Registry("task")


def _fit_classifier(cfg: RunConfig, log: RunLog, resume_dir: Path | None = None):
    return fit_classifier(cfg, log=log, resume_dir=resume_dir)


def _audit_scene_images(cfg: RunConfig, folder: Path, log: RunLog) -> None:
    """A detection or segmentation run's data audit: its images read as multi-label data by their objects' classes,
    in the run's own split, at the classifier's size (`classify.audit`)."""
    d = cfg.data
    images = RunConfig.from_options(d.data, task="multilabel", val_fraction=d.val_fraction, seed=cfg.train.seed,
                                    cache_dir=d.cache_dir, workers=d.workers, max_pixels=d.max_pixels,
                                    device=cfg.train.device)
    audit_data(images, log=log, out=folder)


def _scene(name: str) -> Task:
    return Task(name, lambda cfg, log, resume_dir=None: run_scene(cfg, name, log, resume_dir, _audit_scene_images),
                scene_model_from_result, load_scene_model, rewrite_scene_report, export_scene_bundle, scene_service)


TASKS.register("classify")(Task("classify", _fit_classifier, model_from_result, load_model, write_report,
                                export_bundle, classifier_service))
TASKS.register("multilabel")(Task("multilabel", _fit_classifier, model_from_result, load_model, write_report,
                                  export_bundle, classifier_service))
TASKS.register("detect")(_scene("detect"))
TASKS.register("segment")(_scene("segment"))


def for_data(cfg: RunConfig) -> Task:
    return TASKS.get(task_name_for_data(cfg))


def for_bundle(source: str | Path) -> Task:
    """The task of a bundle (or run folder); exported .onnx files and `imagenet` are classifiers."""
    source = str(source)
    if source == IMAGENET or source.endswith(".onnx"):
        return TASKS.get("classify")
    task = read_meta(source).task
    if task not in TASKS:
        raise TunevisionError(f"{source}: model.json names task {task!r}; this version knows "
                              f"{', '.join(TASKS)}")
    return TASKS.get(task)


def fit(cfg: RunConfig, *, log: RunLog | None = None, resume_dir: Path | None = None):
    """Train the task the data (or --task) asks for, in its run folder; the config names it from here on. The
    process's allocator keeps freed blocks from here on (`keep_freed_memory`: a batch's tensors reuse the last
    batch's pages), as under the command line."""
    keep_freed_memory()
    task = for_data(cfg)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task=task.name))
    return task.fit(cfg, log or RunLog(), resume_dir)
