"""Matplotlib figures for the report, as functions of plain arrays: each saves a PNG and returns the figure."""
from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tunevision.core.atomic import atomic_write


@functools.cache
def _figure_class() -> type:
    """A matplotlib Figure outside pyplot (no backend, no display needed, nothing global), which a notebook
    still shows inline: it renders itself as PNG for IPython. Built at the first figure, so that what never draws
    (predicting, serving, exporting) does not import matplotlib (0.4-0.5 s)."""
    from matplotlib.figure import Figure

    class InlineFigure(Figure):
        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png")
            return buf.getvalue()

    return InlineFigure


def new_figure(width: float, height: float, layout: str | None = "constrained"):
    return _figure_class()(figsize=(width, height), dpi=100, layout=layout)


def save_figure(fig, path: Path | None):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomically, like every file a run writes: a full disk leaves the previous picture and no temp file
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    return fig


def class_counts(counts: dict[str, dict[str, int]], path: Path | None = None):
    """Grouped bars: images per class for each split."""
    splits = list(counts)
    classes = list(next(iter(counts.values())))
    fig = new_figure(max(5, 0.6 * len(classes) + 2), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / max(len(splits), 1)
    x = np.arange(len(classes))
    for i, split in enumerate(splits):
        ax.bar(x + i * width, [counts[split][c] for c in classes], width, label=split)
    ax.set_xticks(x + width * (len(splits) - 1) / 2, classes, rotation=30 if len(classes) > 6 else 0, ha="right"
                  if len(classes) > 6 else "center")
    ax.set_ylabel("images")
    ax.legend()
    return save_figure(fig, path)


TILE = (220, 240)  # pixels per image of a grid, its title included (2.2 x 2.4 inches at 100 dpi)
TITLE_HEIGHT = 20


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: Path | None = None, columns: int = 4):
    """Titled images in a grid, composed by Pillow and shown by a figure of one picture: drawn as one matplotlib
    subplot per image, a report's three grids took 2.7 s of its 3.4 s (constrained layout and resampling)."""
    sheet = grid_picture(images, titles, columns)
    if path is not None:
        save_picture(sheet, Path(path))
    fig = new_figure(sheet.width / 100, sheet.height / 100, layout=None)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.asarray(sheet))
    ax.axis("off")
    return fig


def save_picture(picture: Image.Image, path: Path) -> None:
    """A picture saved atomically, as JPEG (quality 90) where the name ends .jpg or .jpeg, else PNG. A grid of photos
    is a photo: as PNG, hymenoptera's report's three grids took 0.1 s each to compress and 400-620 KB each (as JPEG:
    3 ms, 80-120 KB); charts stay PNG, whose flat colours and thin lines JPEG blurs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    atomic_write(path, lambda tmp: picture.save(tmp, format="JPEG", quality=90) if jpeg
                 else picture.save(tmp, format="PNG"))


def grid_picture(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4) -> Image.Image:
    """The grid as one RGB picture: each image fitted into its tile (pixels kept sharp when enlarged, as
    matplotlib shows them), its title above it, cut with an ellipsis where it is wider than the tile."""
    width, height = TILE
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("RGB", (width * columns, height * rows), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(12)
    for i, (im, title) in enumerate(zip(images, titles)):
        x, y = (i % columns) * width, (i // columns) * height
        tile = _picture(im)
        box = (width - 8, height - TITLE_HEIGHT - 6)
        scale = min(box[0] / tile.width, box[1] / tile.height)
        tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))),
                           Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR)
        sheet.paste(tile, (x + (width - tile.width) // 2, y + TITLE_HEIGHT + (box[1] - tile.height) // 2))
        text = str(title)
        while len(text) > 1 and draw.textlength(text, font=font) > width - 6:
            text = text[:-2] + "…"
        draw.text((x + width / 2, y + TITLE_HEIGHT / 2 + 2), text, fill="black", font=font, anchor="mm")
    return sheet


def _picture(image) -> Image.Image:
    """An RGB picture of an HxW[x3] array (uint8, or floats in 0..1) or of a PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[-1] == 1 else a).convert("RGB")


def training_curves(epochs: np.ndarray, series: dict[str, np.ndarray], path: Path | None = None):
    """Loss, accuracy, learning rate and seconds per epoch, in four panels."""
    fig = new_figure(10, 6)
    panels = [("loss", ["train_loss", "val_loss"]), ("accuracy", ["train_acc", "val_acc"]),
              ("learning rate (head)", ["lr"]), ("seconds per epoch", ["seconds"])]
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(2, 2, i + 1)
        for k in keys:
            ax.plot(epochs, series[k], marker="." if len(epochs) < 30 else None, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if len(keys) > 1:
            ax.legend()
    return save_figure(fig, path)


def confusion_heatmaps(cm: np.ndarray, classes: Sequence[str], path: Path | None = None):
    """Counts (left) and row-normalised recall (right); the first image's data is the matrix itself."""
    n = len(classes)
    # past ~30 classes every tick label is unreadable and slow to draw: label every k-th class, keep the size sane
    step = 1 if n <= 30 else -(-n // 20)
    fig = new_figure(min(max(8, 1.1 * n * 2), 20), min(max(3.5, 0.55 * n + 1.5), 10))
    with np.errstate(invalid="ignore"):
        norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
    for i, (data, title, fmt) in enumerate([(cm, "counts", "d"), (norm, "row-normalised", ".2f")]):
        ax = fig.add_subplot(1, 2, i + 1)
        im = ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(0, n, step), classes[::step], rotation=45, ha="right", fontsize=8 if step > 1 else None)
        ax.set_yticks(range(0, n, step), classes[::step], fontsize=8 if step > 1 else None)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(title)
        if n <= 20:
            for (r, c), v in np.ndenumerate(data):
                ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=8,
                        color="white" if v > data.max() / 2 else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return save_figure(fig, path)


def reliability_diagram(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, float]], path: Path | None = None):
    """curves: name -> (mean confidence, accuracy, count per bin, ECE)."""
    fig = new_figure(4.5 * len(curves), 4)
    for i, (name, (conf, acc, count, ece)) in enumerate(curves.items()):
        ax = fig.add_subplot(1, len(curves), i + 1)
        bins = len(conf)
        centres = (np.arange(bins) + 0.5) / bins
        ax.bar(centres, np.where(count > 0, acc, 0), width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {ece:.3f}")
        ax.legend(loc="upper left")
    return save_figure(fig, path)


def gradcam_figure(image: np.ndarray, heat: np.ndarray, title: str, path: Path | None = None):
    """The image under its Grad-CAM heat map, titled (class and probability), with the colour scale."""
    fig = new_figure(5, 4.4)
    ax = fig.add_subplot()
    ax.imshow(image)
    shown = ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="relative importance")
    return save_figure(fig, path)


def pr_curves(curves: dict[str, list[float]], path: Path | None = None):
    """Precision against recall at IoU 0.5, one line per class (COCO's 101 recall points)."""
    fig = new_figure(5, 3.6)
    ax = fig.add_subplot()
    recall = np.linspace(0, 1, 101)
    for name, precision in curves.items():
        ax.plot(recall, precision, label=f"{name} (AP50 {np.mean(precision):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall, IoU 0.5")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)


def label_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float], float]],
                    path: Path | None = None):
    """Multi-label: precision against recall per label, each with its chosen threshold marked (a dot).
    curves: label -> (recall, precision, (recall, precision) at the threshold, AP)."""
    fig = new_figure(5.5, 4)
    ax = fig.add_subplot()
    for name, (recall, precision, (r_t, p_t), ap) in curves.items():
        line, = ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
        ax.plot([r_t], [p_t], "o", color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="precision-recall per label (dot: the chosen threshold)")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)
