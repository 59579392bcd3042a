"""The status page: server-rendered HTML with an inline SVG chart, no script, no build step.

Everything shown comes from a Snapshot; every value is escaped, and the page is scrubbed of
secrets as a whole (history written by an older version may still hold one).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from sbtc_ops import __version__
from sbtc_ops.redact import scrub
from sbtc_ops.render import format_size
from sbtc_ops.serve.snapshot import Colour, Snapshot, Tile, human_age

_COLOURS = {Colour.GREEN: "#1a7f37", Colour.AMBER: "#b36b00", Colour.RED: "#c62828"}
_WORDS = {Colour.GREEN: "OK", Colour.AMBER: "ATTENTION", Colour.RED: "PROBLEM"}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1f2328;
background:#f6f8fa}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
.overall{display:inline-block;padding:.3rem .8rem;border-radius:4px;color:#fff;font-weight:700}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin-top:1rem}
.card{background:#fff;border-radius:6px;padding:.7rem .9rem;min-width:14rem;max-width:22rem;
border-left:.45rem solid}
.card b{display:block;margin-bottom:.2rem}
table{border-collapse:collapse;background:#fff;font-size:.9rem}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #d0d7de;vertical-align:top}
.ok{color:#1a7f37}.bad{color:#c62828}.warn{color:#b36b00}
.muted{color:#57606a;font-size:.85rem}svg{background:#fff;border-radius:6px}
"""


def render_page(snap: Snapshot, next_runs: dict[str, float | None] | None = None) -> str:
    overall = snap.overall()
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<meta http-equiv='refresh' content='60'>",
        "<title>sbtc-ops status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>sbtc-ops — signer operations</h1>",
        f"<span class='overall' id='overall' data-verdict='{overall}' "
        f"style='background:{_COLOURS[overall]}'>{_WORDS[overall]}</span>",
        f" <span class='muted'>as of {_when(snap.now)}",
        f"{' · running: ' + escape(', '.join(snap.running)) if snap.running else ''}</span>",
        "<div class='cards'>",
        *(_card(tile) for tile in snap.tiles()),
        "</div>",
        "<h2>Backup size and duration</h2>",
        backup_chart(snap),
        "<h2>Latest backups</h2>",
        _backups_table(snap),
        "<h2>Latest verifications</h2>",
        _verifies_table(snap),
        "<h2>Open audit findings</h2>",
        _findings_table(snap),
        _schedule_table(snap, next_runs),
        f"<p class='muted'>sbtc-ops {escape(__version__)} · "
        "<a href='/metrics'>metrics</a> · <a href='/healthz'>healthz</a></p>",
        "</body></html>",
    ]
    return scrub("".join(parts))


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _card(verdict: Tile) -> str:
    return (
        f"<div class='card verdict-{verdict.colour}' data-verdict='{verdict.colour}' "
        f"style='border-color:{_COLOURS[verdict.colour]}'><b>{escape(verdict.name)}: "
        f"{_WORDS[verdict.colour]}</b>{escape(verdict.detail)}</div>"
    )


def _size(value: object) -> str:
    try:
        size = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    return format_size(size)


def _outcome(outcome: str) -> str:
    css = "ok" if outcome in ("ok", "match") else "bad"
    return f"<span class='{css}'>{escape(outcome)}</span>"


def _backups_table(snap: Snapshot) -> str:
    if not snap.backups:
        return "<p class='muted'>No backup recorded yet.</p>"
    existing = snap.existing_backups
    rows = [
        f"<tr><td>{escape(e.subject)}</td><td>{_when(e.at)}</td><td>{_outcome(e.outcome)}</td>"
        f"<td>{escape(str(e.data.get('kind') or ''))}</td><td>{_size(e.data.get('size'))}</td>"
        f"<td>{_seconds(e.data.get('duration_s'))}</td>"
        f"<td>{escape(str(e.data.get('error') or ''))[:160]}</td></tr>"
        for e in existing[:10]
    ]
    head = (
        "<tr><th>backup</th><th>at</th><th>outcome</th><th>kind</th><th>size</th>"
        "<th>duration</th><th>error</th></tr>"
    )
    return f"<table id='backups'>{head}{''.join(rows)}</table>"


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "-"


def _verifies_table(snap: Snapshot) -> str:
    if not snap.verifies:
        return "<p class='muted'>No verification recorded yet.</p>"
    rows = []
    for e in snap.verifies[:10]:
        failed = ", ".join(e.data.get("failed_checks") or [])
        rows.append(
            f"<tr><td>{escape(e.subject)}</td><td>{_when(e.at)}</td>"
            f"<td>{_outcome(str(e.data.get('verdict') or e.outcome))}</td>"
            f"<td>{escape(failed)}</td><td>{_seconds(e.data.get('duration_s'))}</td>"
            f"<td>{escape(_attested(snap, e.subject))}</td></tr>"
        )
    head = (
        "<tr><th>backup</th><th>at</th><th>verdict</th><th>failed checks</th><th>duration</th>"
        "<th>attestation</th></tr>"
    )
    return f"<table id='verifies'>{head}{''.join(rows)}</table>"


def _attested(snap: Snapshot, backup_id: str) -> str:
    attestation = snap.attestation_of(backup_id)
    if attestation is None:
        return "-"
    if attestation.outcome != "signed":
        return "unsigned"
    good = "signed match" if snap.signed_match(backup_id) else "signed"
    return f"{good}, {snap.signatures_of(attestation)} signature(s)"


def _findings_table(snap: Snapshot) -> str:
    if snap.audit is None:
        return "<p class='muted'>No audit has run yet.</p>"
    findings = snap.open_findings
    if not findings:
        return f"<p class='ok'>None (audit {human_age(snap.now - snap.audit.at)} ago).</p>"
    rows = [
        f"<tr><td>{escape(str(f.get('severity')))}</td><td>{escape(str(f.get('status')))}</td>"
        f"<td>{escape(str(f.get('id')))}</td><td>{escape(str(f.get('title') or ''))}</td>"
        f"<td>{escape(str(f.get('detail') or ''))}</td>"
        f"<td>{escape(str(f.get('remediation') or ''))}</td></tr>"
        for f in findings[:50]
    ]
    head = (
        "<tr><th>severity</th><th>status</th><th>check</th><th>title</th><th>detail</th>"
        "<th>fix</th></tr>"
    )
    return f"<table id='findings'>{head}{''.join(rows)}</table>"


def _schedule_table(snap: Snapshot, next_runs: dict[str, float | None] | None) -> str:
    if not next_runs:
        return ""
    rows = []
    for job, due in sorted(next_runs.items()):
        last = snap.last_runs.get(job)
        state = "running" if job in snap.running else (last.outcome if last else "never ran")
        when = _when(due) if due is not None else "on demand"
        # Every outcome but ok says why (the run's one-line summary).
        why = "" if last is None or last.outcome == "ok" else str(last.data.get("summary") or "")
        rows.append(
            f"<tr><td>{escape(job)}</td><td>{escape(state)}</td>"
            f"<td>{_when(last.started_at) if last else '-'}</td><td>{when}</td>"
            f"<td>{escape(why[:300])}</td></tr>"
        )
    head = (
        "<tr><th>job</th><th>last outcome</th><th>last run</th><th>next run</th><th>why</th></tr>"
    )
    return f"<h2>Schedule</h2><table id='schedule'>{head}{''.join(rows)}</table>"


# -- the chart ------------------------------------------------------------------------------

_W, _H, _PAD_L, _PAD_R, _PAD_Y = 720, 220, 60, 60, 24


def backup_chart(snap: Snapshot) -> str:
    """Size (bars' line, left axis) and duration (right axis) of successful full backups."""
    points = sorted(
        (e.at, float(e.data.get("size") or 0), float(e.data.get("duration_s") or 0))
        for e in snap.full_backups_ok
    )
    if len(points) < 1:
        return "<p class='muted' id='chart-empty'>No successful backup to chart yet.</p>"
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, 1.0)
    max_size = max(p[1] for p in points) or 1.0
    max_duration = max(p[2] for p in points) or 1.0
    plot_w = _W - _PAD_L - _PAD_R
    plot_h = _H - 2 * _PAD_Y

    def x(t: float) -> float:
        return _PAD_L + (plot_w * (t - t0) / span if len(points) > 1 else plot_w / 2)

    def y(value: float, top: float) -> float:
        return _PAD_Y + plot_h * (1 - value / top)

    size_line = " ".join(f"{x(t):.1f},{y(s, max_size):.1f}" for t, s, _ in points)
    duration_line = " ".join(f"{x(t):.1f},{y(d, max_duration):.1f}" for t, _, d in points)
    dots = "".join(
        f"<circle cx='{x(t):.1f}' cy='{y(s, max_size):.1f}' r='2.5' fill='#0969da'>"
        f"<title>{_when(t)}: {_size(s)}, {d:.1f} s</title></circle>"
        for t, s, d in points
    )
    base = _H - _PAD_Y
    return (
        f"<svg id='backup-chart' xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}' "
        f"viewBox='0 0 {_W} {_H}' role='img' aria-label='Backup size and duration over time'>"
        f"<line x1='{_PAD_L}' y1='{base}' x2='{_W - _PAD_R}' y2='{base}' stroke='#8c959f'/>"
        f"<line x1='{_PAD_L}' y1='{_PAD_Y}' x2='{_PAD_L}' y2='{base}' stroke='#8c959f'/>"
        f"<line x1='{_W - _PAD_R}' y1='{_PAD_Y}' x2='{_W - _PAD_R}' y2='{base}' stroke='#8c959f'/>"
        f"<text x='4' y='{_PAD_Y + 4}' font-size='11' fill='#0969da'>{_size(max_size)}</text>"
        f"<text x='4' y='{base}' font-size='11' fill='#0969da'>0</text>"
        f"<text x='{_W - _PAD_R + 4}' y='{_PAD_Y + 4}' font-size='11' fill='#bf3989'>"
        f"{max_duration:.1f} s</text>"
        f"<text x='{_PAD_L}' y='{_H - 6}' font-size='11' fill='#57606a'>{_when(t0)}</text>"
        f"<text x='{_W - _PAD_R}' y='{_H - 6}' font-size='11' fill='#57606a' "
        f"text-anchor='end'>{_when(t1)}</text>"
        f"<polyline id='size-line' fill='none' stroke='#0969da' stroke-width='2' "
        f"points='{size_line}'/>"
        f"<polyline id='duration-line' fill='none' stroke='#bf3989' stroke-width='2' "
        f"stroke-dasharray='5 3' points='{duration_line}'/>{dots}"
        f"<text x='{_PAD_L + 8}' y='{_PAD_Y - 8}' font-size='12' fill='#0969da'>— size</text>"
        f"<text x='{_PAD_L + 70}' y='{_PAD_Y - 8}' font-size='12' fill='#bf3989'>"
        f"-- duration</text></svg>"
    )
