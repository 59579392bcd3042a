"""DB-001 against a real PostgreSQL server: the signer's role attributes, read over TCP."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest

from sbtc_ops.audit.framework import REGISTRY, HostContext, RecordedRunner, load_areas, run_audit
from sbtc_ops.config import Settings
from tests.support.pg import SourceServer

pytestmark = pytest.mark.postgres


def db_role_finding(url: str, tmp_path: Path) -> tuple[str, str]:
    load_areas()
    settings = Settings.model_validate({"db": {"url": url}, "state_dir": str(tmp_path)})
    ctx = HostContext(settings, runner=RecordedRunner({}))
    (finding,) = run_audit(ctx, [REGISTRY["DB-001"]]).findings
    return finding.status.value, finding.detail


def role_url(server: SourceServer, attributes: str) -> tuple[str, str]:
    name = f"audit_{secrets.token_hex(3)}"
    password = "pw-" + secrets.token_hex(10)
    with server.connect("postgres") as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN {attributes} PASSWORD '{password}'")
    return server.cluster.tcp_url("signer", name, password), password


def test_signer_role_without_privileges_passes(
    source_server: SourceServer,
    tmp_path: Path,
) -> None:
    status, detail = db_role_finding(source_server.signer_url, tmp_path)
    assert (status, detail) == (
        "pass",
        "role 'signer' is not a superuser and has no extra privileges",
    )


@pytest.mark.parametrize(
    ("attributes", "expected", "words"),
    [
        ("SUPERUSER", "fail", "is a superuser"),
        ("CREATEROLE BYPASSRLS", "warn", "CREATEROLE, BYPASSRLS"),
    ],
)
def test_privileged_roles_are_flagged_without_leaking_the_password(
    source_server: SourceServer,
    tmp_path: Path,
    attributes: str,
    expected: str,
    words: str,
) -> None:
    url, password = role_url(source_server, attributes)
    status, detail = db_role_finding(url, tmp_path)
    assert status == expected
    assert words in detail
    assert password not in detail


def test_unreachable_database_is_a_skip_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    password = "pw-" + secrets.token_hex(10)
    status, detail = db_role_finding(
        f"postgresql://signer:{password}@127.0.0.1:{port}/signer", tmp_path
    )
    assert status == "skip"
    assert detail.startswith("cannot connect to the signer database")
    assert password not in detail
