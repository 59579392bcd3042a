"""`verify --html FILE`: one self-contained page to sign off a restore drill (4-eyes).

Every value that came from the archive (names, messages, ids) or a node is escaped; the page
loads nothing from anywhere. Written owner-only (files.write_report_file).
"""

from __future__ import annotations

import html
import json
import socket
from pathlib import Path
from typing import Any

from sbtc_ops import __version__
from sbtc_ops.files import write_report_file
from sbtc_ops.verify.report import VerifyReport

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:64rem;color:#1f2328}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{padding:.35rem .5rem;vertical-align:top;
border-bottom:1px solid #eee;text-align:left;font-size:.9rem}
.st{font-weight:600;text-transform:uppercase;font-size:.75rem;white-space:nowrap}
.pass,.match{color:#1a7f37}.warn,.stale{color:#9a6700}.skip{color:#6e7781}
.fail,.error,.mismatch,.tampered,.corrupt,.incomplete{color:#cf222e}
.verdict{font-size:2rem;font-weight:700}.meta{color:#57606a;font-size:.85rem}
.fix{color:#0550ae}code{font-size:.8rem;word-break:break-all}.sign td{height:2rem}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_html(report: VerifyReport) -> str:
    doc = report.to_json()
    verdict = str(doc["verdict"])
    css_class = verdict if verdict.isalpha() else "error"
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        "<title>sbtc-ops restore drill report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>sbtc-ops restore drill</h1>",
        f"<p class=meta>backup {_e(doc['backup'])} · host {_e(socket.gethostname())} · "
        f"sbtc-ops {_e(__version__)}</p>",
        f"<p id=verdict data-verdict='{_e(verdict)}'>verdict "
        f"<span class='verdict {_e(css_class)}'>{_e(verdict)}</span></p>",
        f"<p>{_e(doc['summary'])}</p>",
        _keys(report),
        _checks(report),
        _section("Schema identity", _schema(report)),
        _section("Budgets", _mapping(doc.get("budgets"))),
        _section("Timings (s)", _mapping(doc.get("timings"))),
        _section("Attestation", _attestation(report)),
        "<h2>Sign-off (4-eyes)</h2><table class=sign>"
        "<tr><th>role</th><th>name</th><th>date</th><th>signature</th></tr>"
        "<tr><td>drill run by</td><td></td><td></td><td></td></tr>"
        "<tr><td>reviewed by</td><td></td><td></td><td></td></tr></table>",
        "</body></html>\n",
    ]
    return "".join(parts)


def _section(title: str, body: str) -> str:
    return f"<h2>{_e(title)}</h2>{body}"


def _keys(report: VerifyReport) -> str:
    by_hand = report.expected_aggregate_key is not None
    label = "expected key (given by hand)" if by_hand else "on-chain key"
    rows = [
        ("newest verified key in the backup", report.db_aggregate_key),
        (label, report.expected_aggregate_key if by_hand else report.onchain_aggregate_key),
    ]
    tip = report.chain_tip
    body = "".join(
        f"<tr><th>{_e(k)}</th><td><code>{_e(v or '-')}</code></td></tr>" for k, v in rows
    )
    for endpoint in report.chain_endpoints:
        answer = endpoint.get("value") or f"error: {endpoint.get('error')}"
        body += f"<tr><th>endpoint {_e(endpoint.get('endpoint'))}</th><td><code>{_e(answer)}</code></td></tr>"
    if tip:
        body += f"<tr><th>Stacks tip</th><td><code>{_e(json.dumps(tip))}</code></td></tr>"
    return f"<h2>Keys</h2><table id=keys>{body}</table>"


def _checks(report: VerifyReport) -> str:
    rows = ["<tr><th>status</th><th>check</th><th>detail</th></tr>"]
    for check in report.checks:
        status = check.status.value
        fix = f"<div class=fix>Fix: {_e(check.remediation)}</div>" if check.remediation else ""
        rows.append(
            f"<tr><td class='st {_e(status)}'>{_e(status)}</td><td>{_e(check.id)}</td>"
            f"<td><div>{_e(check.detail)}</div>{fix}</td></tr>"
        )
    return f"<h2>Checks</h2><table id=checks>{''.join(rows)}</table>"


def _schema(report: VerifyReport) -> str:
    found = [c for c in report.checks if c.id.startswith("schema.")]
    if not found:
        return "<p>not run</p>"
    rows = []
    for check in found:
        data = json.dumps(check.data, sort_keys=True, default=str)[:4000] if check.data else ""
        rows.append(
            f"<tr><td class='st {_e(check.status.value)}'>{_e(check.status.value)}</td>"
            f"<td>{_e(check.id)}</td><td>{_e(check.detail)}<div><code>{_e(data)}</code></div></td></tr>"
        )
    return f"<table>{''.join(rows)}</table>"


def _mapping(values: Any) -> str:
    if not isinstance(values, dict) or not values:
        return "<p>none recorded</p>"
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td><code>{_e(json.dumps(v, default=str))}</code></td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def _attestation(report: VerifyReport) -> str:
    attestation = report.attestation
    if not attestation:
        return "<p>no attestation was written</p>"
    signed = "signed" if attestation.get("signed") else "UNSIGNED (no attest.signing_key)"
    rows = [
        ("statement", attestation.get("name")),
        ("statement SHA-256", attestation.get("statement_sha256")),
        ("signature", f"{signed}; key {attestation.get('signing_key') or '-'}"),
        ("stored", ", ".join(attestation.get("stored") or []) or "-"),
    ]
    rows += [("problem", p) for p in attestation.get("problems") or []]
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    verify = (
        "<p class=meta>Check it with OpenSSH alone: <code>ssh-keygen -Y verify -f allowed_signers "
        "-I SIGNER -n sbtc-ops-drill-attestation@v1 -s STATEMENT.sig &lt; STATEMENT</code>, or "
        "<code>sbtc-ops attest verify BACKUP --allowed-signers FILE</code>.</p>"
    )
    return f"<table id=attestation>{body}</table>{verify}"


def write_html(report: VerifyReport, path: Path) -> None:
    write_report_file(path, render_html(report).encode("utf-8"))
