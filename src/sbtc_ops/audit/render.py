"""Audit report renderers: terminal (grouped by area), JSON document, self-contained HTML.

Renderers only read findings; findings are already scrubbed of secrets by the runner.
"""

from __future__ import annotations

import html
import json
import socket
from itertools import groupby
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from sbtc_ops import __version__
from sbtc_ops.audit.framework import AuditReport, Check, Finding
from sbtc_ops.files import write_report_file
from sbtc_ops.render import CheckLine, render_checks, status_summary
from sbtc_ops.results import Status


def _by_area(report: AuditReport) -> list[tuple[str, list[Finding]]]:
    return [(area, list(items)) for area, items in groupby(report.findings, key=lambda f: f.area)]


def render_terminal(report: AuditReport, console: Console) -> None:
    groups = [
        (area, [_line(finding) for finding in findings]) for area, findings in _by_area(report)
    ]
    render_checks(console, groups)
    summary = status_summary(f.status for f in report.findings)
    score = "n/a" if report.score is None else f"{report.score}/100"
    console.print(
        f"\n[bold]{escape(summary)}[/].  "
        f"Hardening score: [bold]{score}[/]  ({report.duration_s:.2f}s)"
    )


def _line(finding: Finding) -> CheckLine:
    return CheckLine(
        finding.status, finding.id, f"{finding.title}: {finding.detail}", finding.remediation
    )


def catalogue(checks: list[Check]) -> list[dict[str, str]]:
    """Every check's fixed description: what `audit --list` prints (and the README uses)."""
    return [
        {
            "id": c.id,
            "area": c.area,
            "severity": c.severity.value,
            "title": c.title,
            "section": c.section,
            "rationale": c.rationale,
            "remediation": c.remediation,
        }
        for c in checks
    ]


def render_catalogue(checks: list[Check], console: Console) -> None:
    for area, items in groupby(checks, key=lambda c: c.area):
        console.print(f"\n[bold]{escape(area)}[/]")
        for c in items:
            console.print(f"  {escape(c.id):<9} {c.severity.value:<8} {escape(c.title)}")


def report_document(report: AuditReport) -> dict[str, Any]:
    doc = report.to_json()
    doc["version"] = __version__
    return doc


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1d1d1f;max-width:70rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{padding:.35rem .5rem;vertical-align:top;
border-bottom:1px solid #eee;text-align:left;font-size:.9rem}
.st{font-weight:600;text-transform:uppercase;font-size:.75rem;white-space:nowrap}
.pass{color:#1a7f37}.warn{color:#9a6700}.fail{color:#cf222e}.error{color:#cf222e}.skip{color:#6e7781}
.meta{color:#57606a;font-size:.85rem}.fix{color:#0550ae}.why{color:#57606a;font-size:.8rem}
.score{font-size:2rem;font-weight:700}td:nth-child(2){white-space:nowrap}.sign td{height:2rem}
"""


# The HTML report reads top-down like a to-do list: what failed first, worst severity first;
# what passed or was skipped last. A table of contents links each section and each problem.
_SECTIONS = (
    ("fail", "Failed"),
    ("error", "Could not check (errors)"),
    ("warn", "Warnings"),
    ("pass", "Passed"),
    ("skip", "Skipped"),
)
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def _ordered(findings: list[Finding], status: str) -> list[Finding]:
    chosen = [f for f in findings if f.status.value == status]
    return sorted(chosen, key=lambda f: (_SEVERITY_ORDER.get(str(f.severity), 9), f.id))


def render_html(report: AuditReport) -> str:
    """One page, no external resources, for handing to a second reviewer (4-eyes)."""
    esc = html.escape
    counts = report.counts()
    score = "n/a" if report.score is None else f"{report.score}/100"
    sections = [(s, title, _ordered(report.findings, s)) for s, title in _SECTIONS]
    sections = [(s, title, items) for s, title, items in sections if items]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>sbtc-ops audit report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>sbtc-ops host audit</h1>",
        f"<p class=meta>host {esc(socket.gethostname())} · root {esc(report.root)} · "
        f"{esc(report.started_at.isoformat(timespec='seconds'))} · sbtc-ops {esc(__version__)}</p>",
        f"<p><span class=score>{esc(score)}</span> hardening score · ",
        " · ".join(f"<span class={s.value}>{counts[s.value]} {s.value}</span>" for s in Status),
        "</p>",
        _toc(sections),
    ]
    for status, title, findings in sections:
        parts.append(f"<h2 id=section-{status}>{esc(title)} ({len(findings)})</h2><table>")
        parts.append(
            "<tr><th>status</th><th>id</th><th>severity</th><th>area</th><th>check</th>"
            "<th>finding</th></tr>"
        )
        parts += [_finding_row(finding) for finding in findings]
        parts.append("</table>")
    parts.append(
        "<h2 id=review>Review (4-eyes)</h2><table class=sign>"
        "<tr><th>role</th><th>name</th><th>date</th><th>signature</th></tr>"
        "<tr><td>prepared by</td><td></td><td></td><td></td></tr>"
        "<tr><td>reviewed by</td><td></td><td></td><td></td></tr></table>"
        "</body></html>\n"
    )
    return "".join(parts)


def _toc(sections: list[tuple[str, str, list[Finding]]]) -> str:
    esc = html.escape
    entries = []
    for status, title, findings in sections:
        entry = f"<li><a href='#section-{status}'>{esc(title)} ({len(findings)})</a>"
        if status in ("fail", "error", "warn"):
            links = ", ".join(
                f"<a href='#finding-{esc(f.id)}'>{esc(f.id)}</a> {esc(f.title)}" for f in findings
            )
            entry += f"<ul class=meta><li>{links}</li></ul>"
        entries.append(entry + "</li>")
    entries.append("<li><a href='#review'>Review (4-eyes)</a></li>")
    return f"<nav id=toc><h2>Contents</h2><ol>{''.join(entries)}</ol></nav>"


def _finding_row(finding: Finding) -> str:
    esc = html.escape
    status = finding.status.value
    details = [f"<div>{esc(finding.detail)}</div>"]
    if finding.remediation:
        details.append(f"<div class=fix>Fix: {esc(finding.remediation)}</div>")
    details.append(
        f"<div class=why>Why: {esc(finding.rationale)} "
        f"(best practice: {esc(finding.section or '')}; severity {esc(finding.severity)})"
        "</div>"
    )
    items = finding.data.get("items")
    if isinstance(items, list) and items:
        listed = "".join(f"<li>{esc(_item_text(item))}</li>" for item in items[:50])
        details.append(f"<ul>{listed}</ul>")
    return (
        f"<tr id='finding-{esc(finding.id)}' data-status={status}>"
        f"<td class='st {status}'>{esc(status)}</td><td>{esc(finding.id)}</td>"
        f"<td>{esc(str(finding.severity))}</td><td>{esc(finding.area)}</td>"
        f"<td>{esc(finding.title)}</td><td>{''.join(details)}</td></tr>"
    )


def _item_text(item: Any) -> str:
    if isinstance(item, dict):
        return ", ".join(f"{k}: {v}" for k, v in item.items())
    return str(item)


def write_html(report: AuditReport, path: Path) -> None:
    """Write the report owner-only: it maps the host's weaknesses."""
    write_report_file(path, render_html(report).encode("utf-8"))


def dumps(report: AuditReport) -> str:
    return json.dumps(report_document(report), indent=2, default=str)
