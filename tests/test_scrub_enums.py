"""The scrubber masks secrets in free text but never rewrites ids, enums or keys (issue 20):
with a database password `fail`, every failed check's `status` in `audit --json` once became
the marker. A secret too short or too common to scrub safely is weak: not scrubbed, counted,
warned about once per run (and `audit secrets` reports short credentials)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sbtc_ops import redact
from sbtc_ops.redact import REDACTED, scrub, scrub_data
from sbtc_ops.results import Status
from sbtc_ops.verify.checks import Verdict
from tests.support.audit import load_scenario
from tests.support.cli import CliResult


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    redact.forget_all()
    yield
    redact.forget_all()


@pytest.mark.parametrize(
    "value", ["fail", "pass", "x", "short7!", *[v.value for v in Verdict], "tampered", "TAMPERED"]
)
def test_short_or_common_secrets_are_weak_not_scrubbed(value: str) -> None:
    redact.register(value)
    assert redact.weak_secret_count() == 1
    assert scrub(f"status {value}") == f"status {value}"
    warning = redact.weak_secrets_warning()
    assert warning is not None and "1 configured secret" in warning
    assert value not in warning  # the warning never shows the secret
    assert redact.weak_secrets_warning() is None  # once per run


def test_published_defaults_are_neither_scrubbed_nor_counted_weak() -> None:
    redact.register("postgres", "devnet")
    assert redact.weak_secret_count() == 0
    assert scrub("postgres devnet") == "postgres devnet"


def test_a_strong_secret_is_scrubbed_in_free_text_but_never_in_keys_or_enums() -> None:
    secret = f"Str0ng-{secrets.token_hex(8)}"
    redact.register(secret)
    document = {
        "ok": False,
        "findings": [
            {
                "id": secret,
                "status": secret,
                "verdict": secret,
                "detail": f"password {secret} found",
                secret: "a key",
            }
        ],
    }
    cleaned = scrub_data(document)["findings"][0]
    assert cleaned["detail"] == f"password {REDACTED} found"
    assert cleaned["id"] == cleaned["status"] == cleaned["verdict"] == secret
    assert secret in cleaned


def test_audit_json_statuses_survive_a_password_fail(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    scenario = load_scenario("weak", tmp_path)
    result = cli(
        "--config",
        str(scenario.settings_file),
        "audit",
        "--root",
        str(scenario.root),
        "--only",
        "secrets,access",
        "--json",
        env={"PGPASSWORD": "fail"},
    )
    assert result.code == 1, result.stderr
    statuses = [f["status"] for f in result.json()["findings"]]
    assert "fail" in statuses
    assert set(statuses) <= {s.value for s in Status}
    assert result.stderr.count("too weak to be hidden") == 1
