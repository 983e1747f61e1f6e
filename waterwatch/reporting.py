"""Rendering of the monthly report: rich table, CSV and a self-contained HTML page."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from waterwatch.core.policy import format_duration
from waterwatch.core.report import Row

COLUMNS = (
    "unit", "rule", "deadlines", "met", "missed", "pending", "on_time_pct", "accept_median_s",
    "accept_p90_s", "resolve_median_s", "resolve_p90_s", "extensions", "returns",
)  # fmt: skip


def _dur(x: Any) -> str:
    return "-" if x is None else format_duration(x)


def render_table(console: Console, month: str, rows: Sequence[Row]) -> None:
    t = Table(title=f"Service deadlines {month} (Article 34)")
    for col in ("Unit", "Rule", "Deadlines", "Met", "Missed", "Pending", "On time",
                "Accept p50", "Accept p90", "Resolve p50", "Resolve p90", "Ext.", "Returns"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("Unit", "Rule") else "right")
    for r in rows:
        d = r.as_dict()
        pct = "-" if d["on_time_pct"] is None else f"{d['on_time_pct']:.1f} %"
        t.add_row(r.unit, r.rule, str(r.deadlines), str(r.met), str(r.missed), str(r.pending), pct,
                  _dur(d["accept_median_s"]), _dur(d["accept_p90_s"]), _dur(d["resolve_median_s"]),
                  _dur(d["resolve_p90_s"]), str(r.extensions), str(r.returns))  # fmt: skip
    console.print(t)


def render_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        d = r.as_dict()
        w.writerow({k: d[k] for k in COLUMNS})
    return buf.getvalue()


def render_html(month: str, rows: Sequence[Row], units: Sequence[Mapping[str, Any]],
                names: Mapping[str, str]) -> str:  # fmt: skip
    """One self-contained page: a bar chart per unit (met / missed / pending) and the table."""
    e = html.escape
    width, bar_h, gap, label_w = 720, 22, 10, 220
    top = max((u["deadlines"] for u in units), default=0) or 1
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + label_w + 80}" '
           f'height="{len(units) * (bar_h + gap) + 30}" role="img" aria-label="deadlines per unit">']  # fmt: skip
    for i, u in enumerate(units):
        y = 10 + i * (bar_h + gap)
        x = label_w
        label = f"{names.get(u['unit'], u['unit'])} ({u['unit']})"
        svg.append(f'<text x="{label_w - 8}" y="{y + bar_h - 6}" text-anchor="end" font-size="13">{e(label)}</text>')
        for key, colour in (("met", "#2e7d32"), ("missed", "#c62828"), ("pending", "#9e9e9e")):
            w = round(width * u[key] / top)
            if w:
                svg.append(f'<rect x="{x}" y="{y}" width="{w}" height="{bar_h}" fill="{colour}">'
                           f'<title>{key}: {u[key]}</title></rect>')  # fmt: skip
                x += w
        pct = "-" if u["on_time_pct"] is None else f"{u['on_time_pct']:.1f} %"
        svg.append(f'<text x="{x + 6}" y="{y + bar_h - 6}" font-size="13">{e(pct)}</text>')
    svg.append("</svg>")
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = []
    for r in rows:
        d = r.as_dict()
        cells = []
        for c in COLUMNS:
            v = d[c]
            if c.endswith("_s"):
                v = _dur(v)
            elif v is None:
                v = "-"
            cells.append(f"<td>{e(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>供水服务时限考核 {e(month)} - waterwatch</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}
.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}</style></head>
<body><h1>供水服务时限考核 Service deadlines {e(month)}</h1>
<p>Article 34 assessment: every deadline in force falling in the month, met or missed, per unit.</p>
<p class="legend"><span style="background:#2e7d32"></span>met<span style="background:#c62828"></span>missed
<span style="background:#9e9e9e"></span>pending</p>
{"".join(svg)}
<h2>Per unit and rule</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{"".join(body)}
</tbody></table></body></html>
"""
