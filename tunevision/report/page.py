"""The HTML page every task's report is: embedded figures, tables, sections, written atomically."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from tunevision.core.atomic import atomic_write


def img_html(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    kind = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/{kind};base64,{data}"><figcaption>' \
           f'{html.escape(alt)}</figcaption></figure>'


def table_html(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(run_dir: Path, sections: list[tuple[str, str]], name: str = "report.html", kind: str = "report"
               ) -> Path:
    """`name` (report.html) from (title, html) sections, written atomically."""
    body = "".join(f'<section id="{t.lower().replace(" ", "-")}"><h2>{t}</h2>{c}</section>' for t, c in sections)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tunevision {kind}: {
        html.escape(run_dir.name)}</title><link rel="icon" href="data:,"><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}}
img{{max-width:100%}} figure{{margin:1em 0}} figcaption{{color:#666;font-size:.9em}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
figure.thumb{{display:inline-block;margin:.3em;width:150px;vertical-align:top}}
figure.thumb img{{width:150px;height:150px;object-fit:cover}}
.pair{{display:inline-block;border:1px solid #ddd;margin:.3em}}
.warn{{background:#fff3cd;padding:.5em}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}
</style></head><body><h1>tunevision {kind}: {html.escape(run_dir.name)}</h1>{body}</body></html>"""
    atomic_write(run_dir / name, lambda p: p.write_text(page))
    return run_dir / name
