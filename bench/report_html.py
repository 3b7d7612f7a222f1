"""One self-contained results page per protocol: `presa-bench report` writes ``report.html`` next to
each group's table.md, with the comparison table, the aggregates, the summary and every figure
embedded as a base64 PNG, so that the one file can be opened, mailed or archived on its own.

It reads only what bench.report built (bench.report.Report and the files it wrote); the numbers and
marks are those of the Markdown and LaTeX tables.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

PAGE = "report.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f2f5; }
tr.average td { background: #fafafa; font-weight: 600; }
td.safe { font-weight: 700; } td.best { font-weight: 700; font-style: italic; color: #0b5cad; }
td.unsafe { color: #999; } td.missing { color: #bbb; }
figure { display: inline-block; margin: 8px; vertical-align: top; }
figure img { max-width: 640px; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; }
.legend, .notes { font-size: 0.85em; color: #555; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def comparison_html(table: Any) -> str:
    """bench.report.ComparisonTable as an HTML table with the Markdown table's marks (as CSS classes)."""
    head = "".join(f"<th>{_esc(m)} reward ↑</th><th>{_esc(m)} cost ↓</th><th>{_esc(m)} budget</th>" for m in table.methods)
    rows = []
    for row in table.rows:
        cells = []
        for method in table.methods:
            entry = row.entries.get(method)
            if entry is None:
                cells.append('<td class="missing">missing</td>' * 2 + "<td>-</td>")
                continue
            mark = "best" if entry.best else ("safe" if entry.safe else "unsafe")
            budget = entry.budget.text() if entry.budget else "-"
            cells.append(f'<td class="{mark}">{entry.reward:.2f}</td><td class="{mark}">{entry.cost:.2f}</td><td>{_esc(budget)}</td>')
        kind = ' class="average"' if row.is_average else ""
        rows.append(f"<tr{kind}><td>{_esc(row.label)}</td>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th>Task</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = path.stem.replace("_", " ")
    return f'<figure><img alt="{_esc(name)}" src="data:image/png;base64,{data}"><figcaption>{_esc(name)}</figcaption></figure>'


def group_page(group: Any, title: str) -> str:
    """The page of one bench.report.GroupReport."""
    table = group.table
    notes = "".join(f"<li>{_esc(n)}</li>" for n in table.footnotes)
    aggregates = group.aggregates.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-") if not group.aggregates.empty else "<p>-</p>"
    figures = "".join(_figure(p) for p in group.files if p.suffix == ".png" and p.is_file())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{_esc(title)}</h1>
<p><strong>{_esc(table.header())}</strong></p>
<p class="legend">Normalized reward and cost averaged over thresholds, seeds and evaluation episodes.
<b>Bold</b>: safe (normalized cost &le; 1); gray: unsafe; <b><i>blue bold italic</i></b>: safe with the highest reward in the row.
Select this table with <code>{_esc(group.group.where())}</code>.</p>
{comparison_html(table)}
<ul class="notes">{notes}</ul>
<h2>Aggregates ({len(group.aggregate_tasks)} task(s) every method has; 95% stratified bootstrap CIs)</h2>
{aggregates}
<h2>Summary</h2>
<pre>{_esc(group.summary)}</pre>
<h2>Figures</h2>
{figures or "<p>No figures (the report ran with --no-plots).</p>"}
</body></html>
"""


def write_pages(report: Any, title: str = "presa-bench results") -> list[Path]:
    """Write one self-contained page per group of ``report`` (bench.report.Report); returns their paths."""
    pages = []
    for group in report.groups:
        path = Path(group.out_dir) / PAGE
        path.write_text(group_page(group, title), encoding="utf-8")
        pages.append(path)
    return pages
