"""audit.csv (the rows a user edits and passes back with --fixes), audit.json and audit.html (thumbnails grouped
by issue, duplicate pairs side by side), written atomically."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from tunevision.auditing.findings import COLUMNS
from tunevision.core.atomic import atomic_write, write_csv
from tunevision.report.page import table_html, write_page

PER_ISSUE = 48  # thumbnails shown per issue; audit.csv lists every row
ORDER = ["label", "leakage", "duplicate", "outlier", "low information", "dark", "light", "blurry", "odd size"]
EXPLAIN = {
    "label": "given label doubted by out-of-fold predictions (confident learning); lowest label quality first",
    "leakage": "the same photo in train and val: the validation score counts it as seen",
    "duplicate": "the same photo twice within a split",
    "outlier": "far from every other image in feature space",
}


def thumbnail(image: np.ndarray, caption: str, side: int = 150) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).resize((side, side)).save(buf, "JPEG", quality=80)
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<figure class="thumb"><img alt="{html.escape(caption)}" src="data:image/jpeg;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_audit(folder: Path, rows: list[dict], summary: dict, image: Callable[[str], np.ndarray | None]) -> Path:
    """The three files under `folder`; `image(path)` gives a thumbnail's pixels (None: not shown)."""
    folder.mkdir(parents=True, exist_ok=True)

    write_csv(folder / "audit.csv", COLUMNS, [[r[c] for c in COLUMNS] for r in rows])
    atomic_write(folder / "audit.json", lambda p: p.write_text(json.dumps(summary, indent=2)))
    sections = [("Summary", summary_html(summary))]
    for issue in sorted({r["issue"] for r in rows}, key=lambda i: ORDER.index(i) if i in ORDER else 99):
        picked = [r for r in rows if r["issue"] == issue]
        sections.append((f"{issue} ({len(picked)})", issue_html(issue, picked[:PER_ISSUE], image)))
    return write_page(folder, sections, name="audit.html", kind="audit")


def summary_html(summary: dict) -> str:
    counts = [[k, v] for k, v in sorted(summary.get("issues", {}).items())] or [["no issue found", ""]]
    parts = [f"<p>{summary.get('images', 0)} images audited.</p>", table_html(["issue", "images"], counts)]
    if "probe_val_acc" in summary or summary.get("leaked_val"):
        parts.append(f"<p>{leakage_line(summary)}</p>")
    parts.append("<p>Edit the <code>action</code> column of audit.csv (keep, drop, relabel:NAME, or for multi-label "
                 "data relabel:A;B; images with boxes or masks take keep or drop) and train with "
                 "<code>tunevision train DATA --fixes audit.csv</code>.</p>")
    return "".join(parts)


def leakage_line(summary: dict) -> str:
    n = len(summary.get("leaked_val", []))
    line = f"leakage: {n} validation image(s) duplicate a training image"
    if "probe_val_acc" not in summary:  # no single-label probe (multi-label data): the run's report has the scores
        return line
    return (f"{line}; probe validation accuracy {summary['probe_val_acc']:.2%} with them, "
            f"{summary['probe_val_acc_without_leaked']:.2%} without")


def issue_html(issue: str, rows: list[dict], image: Callable[[str], np.ndarray | None]) -> str:
    out = [f"<p>{html.escape(EXPLAIN.get(issue, 'measured on the decoded image; score is the value the rule read'))}"
           "</p>"]
    for r in rows:
        first = image(r["path"])
        if first is None:
            continue
        caption = f"{Path(r['path']).name}: {r['given']}" + (f" -> {r['suggested']}" if issue == "label" else "")
        cell = thumbnail(first, f"{caption} ({r['score']})")
        if r["other"]:
            other = image(r["other"])
            if other is not None:
                cell = f'<span class="pair">{thumbnail(other, Path(r["other"]).name)}{cell}</span>'
        out.append(cell)
    return "".join(out)


def run_section(folder: Path, predictions: list[dict], score: str = "validation accuracy"
                ) -> tuple[str, str] | None:
    """A train run's report section from its audit/ folder; the leakage line uses the run's own validation
    predictions (rows with path, actual, predicted: a class, or a multi-label label set), with and without the
    validation images that leak."""
    path = folder / "audit.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    leaked = set(summary.get("leaked_val", []))
    parts = [summary_html({k: v for k, v in summary.items() if not k.startswith("probe_")})]
    if predictions:
        right = [r["actual"] == r["predicted"] for r in predictions]
        kept = [ok for ok, r in zip(right, predictions) if r["path"] not in leaked]
        without = f"{sum(kept) / len(kept):.2%}" if kept else "n/a"
        parts.append(f"<p>This run's {score}: {sum(right) / len(right):.2%} on all {len(right)} images, "
                     f"{without} without the {len(leaked)} that duplicate a training image.</p>")
    parts.append('<p>Thumbnails of every issue: <a href="audit/audit.html">audit/audit.html</a>; every row: '
                 "audit/audit.csv.</p>")
    return "Data audit", "".join(parts)
