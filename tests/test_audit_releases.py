"""audit releases: fake GitHub releases API (cache, token, rate limits), fake OSV, dpkg status."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sbtc_ops.audit.areas.releases import debian_packages, python_packages
from sbtc_ops.audit.framework import HostContext
from sbtc_ops.host.signer import OCI_VERSION
from tests.fakes.bitcoind import FakeBitcoind, default_network_info
from tests.fakes.github_releases import FakeGitHub, reference_releases
from tests.fakes.http_base import http_error, not_json, slow
from tests.fakes.osv import FakeOSV, make_record
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.audit2 import make_settings, run_area, statuses

FIXTURE = Path(__file__).parent / "fixtures" / "audit2" / "releases"
REL_IDS = [f"REL-00{i}" for i in range(1, 7)]
TOKEN = "ghp_TestToken1234567890abcdef"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        reference_releases(fake)
        yield fake


@pytest.fixture
def osv() -> Iterator[FakeOSV]:
    with FakeOSV() as fake:
        yield fake


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.fixture
def nodes() -> Iterator[tuple[FakeBitcoind, FakeStacksNode]]:
    with FakeBitcoind() as bitcoind, FakeStacksNode() as stacks:
        yield bitcoind, stacks


def settings_for(
    tmp_path: Path,
    github: FakeGitHub,
    osv: FakeOSV,
    nodes: tuple[FakeBitcoind, FakeStacksNode] | None = None,
    **audit: Any,
) -> Any:
    doc: dict[str, Any] = {
        "compose_files": ["/srv/signer/docker-compose.yml"],
        "github_api_url": github.url,
        "osv_api_url": osv.url,
    }
    if nodes is not None:
        doc["bitcoin_rpc_url"] = nodes[0].rpc_url()
        doc["stacks_node_url"] = nodes[1].url
    doc.update(audit)
    return make_settings(tmp_path, audit=doc)


def test_everything_current_and_clean(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV, nodes: Any
) -> None:
    findings = run_area("releases", settings_for(tmp_path, github, osv, nodes), root=tree)
    assert statuses(findings) == dict.fromkeys(REL_IDS, "pass")
    assert findings["REL-001"].data["source"].startswith("compose image tag signer-1.3.3")
    assert findings["REL-002"].data["source"].startswith("/v2/info stacks-node 3.1.0.0.5")
    assert findings["REL-003"].data["source"] == "getnetworkinfo 280100"
    assert sorted(github.paths()) == sorted(
        f"/repos/{repo}/releases"
        for repo in ("stacks-sbtc/sbtc", "stacks-network/stacks-core", "bitcoin/bitcoin")
    )
    batch = [r for r in osv.requests if r.path == "/v1/querybatch"]
    queried = {q["package"]["name"]: q for r in batch for q in r.json()["queries"]}
    # Debian records use source package names and versions
    assert queried["openssl"] == {
        "package": {"ecosystem": "Debian:12", "name": "openssl"},
        "version": "3.0.15-1~deb12u1",
    }
    assert queried["curl"]["version"] == "7.88.1-10+deb12u8"
    assert "libssl3" not in queried and "old-removed-tool" not in queried
    assert queried["httpx"]["package"]["ecosystem"] == "PyPI"


def test_behind_within_grace_warns_and_beyond_fails(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV, nodes: Any
) -> None:
    bitcoind, stacks = nodes
    (tree / "srv/signer/.env").write_text("SIGNER_VERSION=1.3.2\n")
    stacks.info["server_version"] = "stacks-node 3.1.0.0.4 (release/3.1.0.0.4:aa, release build)"
    bitcoind.network = default_network_info(270200)
    findings = run_area("releases", settings_for(tmp_path, github, osv, nodes), root=tree)
    assert statuses(findings)["REL-001"] == "fail"  # 1.3.3 out since 2026-10-01
    assert "sBTC signer 1.3.2 is behind v1.3.3" in findings["REL-001"].detail
    assert statuses(findings)["REL-002"] == "warn"  # 3.1.0.0.5 published 3 days ago
    assert statuses(findings)["REL-003"] == "warn"  # 27.2 patched, newer major exists
    assert "newer major" in findings["REL-003"].detail

    bitcoind.network = default_network_info(240100)
    findings = run_area("releases", settings_for(tmp_path, github, osv, nodes), root=tree)
    assert statuses(findings)["REL-003"] == "fail"
    assert "unmaintained" in findings["REL-003"].detail


def test_versions_from_image_tags_when_nodes_are_down(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV
) -> None:
    findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-002"] == "pass"
    assert findings["REL-002"].data["source"] == "compose image tag 3.1.0.0.5"
    assert statuses(findings)["REL-003"] == "pass"
    assert findings["REL-003"].data["source"] == "image tag 28.1"


def test_signer_version_from_a_digest_only_image_label_or_docker_ps(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV
) -> None:
    compose = tree / "srv/signer/docker-compose.yml"
    text = compose.read_text()
    digest_only = text.replace(":signer-${SIGNER_VERSION:-1.3.3}@", "@")
    compose.write_text(digest_only)
    image = "ghcr.io/stacks-sbtc/sbtc@" + digest_only.split("sbtc@", 1)[1].split()[0]
    inspect = f"docker image inspect --format {OCI_VERSION} {image}"
    settings = settings_for(tmp_path, github, osv, osv_python=False)
    findings = run_area("releases", settings, root=tree, outputs={inspect: "1.3.2\n"})
    assert statuses(findings)["REL-001"] == "fail"
    assert findings["REL-001"].data["source"] == (
        "image label org.opencontainers.image.version=1.3.2"
    )
    findings = run_area("releases", settings, root=tree, outputs={inspect: "<no value>\n"})
    assert statuses(findings)["REL-001"] == "skip"
    assert "names no version" in findings["REL-001"].detail

    no_compose = settings_for(tmp_path, github, osv, osv_python=False, compose_files=[])
    docker_ps = {
        "docker ps --format {{.Image}}": "postgres:16\nghcr.io/stacks-sbtc/sbtc:signer-1.3.3\n"
    }
    findings = run_area("releases", no_compose, root=tree, outputs=docker_ps)
    assert statuses(findings)["REL-001"] == "pass"
    assert findings["REL-001"].data["source"] == "docker ps tag signer-1.3.3"


def test_cache_ttl_and_offline_fallback(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV
) -> None:
    settings = settings_for(tmp_path, github, osv)
    run_area("releases", settings, root=tree)
    assert len(github.requests) == 3
    cache = tmp_path / "state" / "audit-github-releases.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    run_area("releases", settings, root=tree)
    assert len(github.requests) == 3  # fresh cache: no request

    github.stop()
    expired = settings_for(tmp_path, github, osv, release_cache_ttl_s=0)
    findings = run_area("releases", expired, root=tree)
    assert statuses(findings)["REL-001"] == "pass"
    assert "from the cache of" in findings["REL-001"].detail
    assert "unreachable" in findings["REL-001"].detail

    cache.unlink()
    findings = run_area("releases", expired, root=tree)
    assert statuses(findings)["REL-001"] == "skip"
    assert "GitHub releases of stacks-sbtc/sbtc" in findings["REL-001"].detail


def test_token_is_sent_and_never_shown(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV
) -> None:
    github.require_token(TOKEN)
    findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-001"] == "error"
    assert "rejected the credentials: HTTP 401" in findings["REL-001"].detail

    settings = settings_for(tmp_path, github, osv, github_token=TOKEN)
    findings = run_area("releases", settings, root=tree)
    assert statuses(findings)["REL-001"] == "pass"
    assert github.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
    dumped = json.dumps([f.to_json() for f in findings.values()])
    assert TOKEN not in dumped
    assert TOKEN not in (tmp_path / "state" / "audit-github-releases.json").read_text()


@pytest.mark.parametrize(
    ("failure", "status", "words"),
    [
        (http_error(500, '{"message": "Server Error"}'), "error", "HTTP 500"),
        (http_error(429, "", {"Retry-After": "60"}), "skip", "retry after 60"),
        (
            http_error(
                403, '{"message": "Resource not accessible"}', {"x-ratelimit-remaining": "59"}
            ),
            "error",
            "rejected the credentials: HTTP 403",
        ),
        (not_json(), "error", "not JSON"),
        (slow(3), "skip", "did not answer within 0.5s"),
    ],
)
def test_github_failure_shapes(
    tmp_path: Path,
    tree: Path,
    github: FakeGitHub,
    osv: FakeOSV,
    failure: Any,
    status: str,
    words: str,
) -> None:
    github.fail(failure)
    settings = settings_for(tmp_path, github, osv, network_timeout_s=0.5)
    findings = run_area("releases", settings, root=tree)
    assert statuses(findings)["REL-001"] == status
    assert words in findings["REL-001"].detail


def test_rate_limit_exhausted_and_empty_release_list(
    tmp_path: Path, tree: Path, osv: FakeOSV
) -> None:
    with FakeGitHub(limit=0) as github:
        findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-001"] == "skip"
    assert "rate limiting requests: HTTP 403" in findings["REL-001"].detail

    with FakeGitHub() as github:
        reference_releases(github)
        github.set_releases("stacks-sbtc/sbtc", [])
        findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-001"] == "skip"
    assert "has no published release" in findings["REL-001"].detail
    assert statuses(findings)["REL-002"] == "pass"


def test_osv_findings_per_advisory(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV
) -> None:
    osv.add_vuln(
        "Debian:12",
        "openssl",
        ["3.0.15-1~deb12u1"],
        make_record("DSA-5999-1", "Debian:12", "openssl", "3.0.16-1~deb12u1", severity="high"),
    )
    osv.add_vuln(
        "Debian:12",
        "glibc",
        ["2.36-9+deb12u9"],
        make_record("DEBIAN-CVE-2026-0001", "Debian:12", "glibc", None, severity="unimportant"),
    )
    import httpx

    osv.add_vuln(
        "PyPI",
        "httpx",
        [httpx.__version__],
        make_record("GHSA-aaaa-bbbb-cccc", "PyPI", "httpx", "99.0.0", severity="MODERATE"),
    )
    findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-004"] == "fail"
    advisories = findings["REL-004"].data["advisories"]
    assert sorted(a["id"] for a in advisories) == ["DEBIAN-CVE-2026-0001", "DSA-5999-1"]
    openssl = next(a for a in advisories if a["id"] == "DSA-5999-1")
    assert (openssl["severity"], openssl["fixed"]) == ("high", "3.0.16-1~deb12u1")
    assert "DSA-5999-1 (openssl 3.0.15-1~deb12u1, high, fixed in 3.0.16-1~deb12u1)" in (
        findings["REL-004"].detail
    )
    assert statuses(findings)["REL-005"] == "fail"
    assert [a["id"] for a in findings["REL-005"].data["advisories"]] == ["GHSA-aaaa-bbbb-cccc"]

    osv.records.pop("DSA-5999-1")  # details unavailable: the id alone is still reported
    osv.affects.pop(("Debian:12", "openssl", "3.0.15-1~deb12u1"))
    findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-004"] == "warn"  # only an unfixed, unimportant one left


def test_osv_failures(tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV) -> None:
    osv.fail(http_error(500, '{"code": 13, "message": "internal"}'), on="/v1/querybatch")
    findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-004"] == "error"
    osv.clear_failures()
    osv.fail(http_error(200, '{"results": []}'), on="/v1/querybatch")
    findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-004"] == "error"
    assert "expected" in findings["REL-004"].detail
    osv.clear_failures()
    osv.fail(slow(3))
    settings = settings_for(tmp_path, github, osv, network_timeout_s=0.3)
    findings = run_area("releases", settings, root=tree)
    assert statuses(findings)["REL-004"] == "skip"
    assert statuses(findings)["REL-005"] == "skip"


def test_dpkg_parsing_and_non_debian(tmp_path: Path, tree: Path) -> None:
    ctx = HostContext(make_settings(tmp_path), root=tree)
    names = {(p.name, p.version) for p in debian_packages(ctx)}
    assert names == {
        ("openssl", "3.0.15-1~deb12u1"),
        ("glibc", "2.36-9+deb12u9"),
        ("curl", "7.88.1-10+deb12u8"),
    }
    (tree / "etc/os-release").write_text('ID=alpine\nVERSION_ID="3.20"\n')
    with FakeOSV() as osv, FakeGitHub() as github:
        findings = run_area("releases", settings_for(tmp_path, github, osv), root=tree)
    assert statuses(findings)["REL-004"] == "skip"
    assert "not alpine" in findings["REL-004"].detail
    assert any(p.name == "pydantic" for p in python_packages())


def test_osv_records_cached_until_modified(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV
) -> None:
    record = make_record("DSA-6001-1", "Debian:12", "curl", "7.88.1-10+deb12u9", severity="high")
    osv.add_vuln("Debian:12", "curl", ["7.88.1-10+deb12u8"], record)
    settings = settings_for(tmp_path, github, osv, osv_python=False)
    run_area("releases", settings, root=tree)
    assert osv.paths().count("/v1/vulns/DSA-6001-1") == 1
    cache = tmp_path / "state" / "audit-osv-records.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    findings = run_area("releases", settings, root=tree)
    assert osv.paths().count("/v1/vulns/DSA-6001-1") == 1  # from the cache
    assert findings["REL-004"].data["advisories"][0]["fixed"] == "7.88.1-10+deb12u9"
    record["modified"] = "2026-11-01T00:00:00Z"
    record["affected"][0]["ranges"][0]["events"][1]["fixed"] = "7.88.1-10+deb12u10"
    findings = run_area("releases", settings, root=tree)
    assert osv.paths().count("/v1/vulns/DSA-6001-1") == 2  # modified: fetched again
    assert findings["REL-004"].data["advisories"][0]["fixed"] == "7.88.1-10+deb12u10"


def test_cli_never_prints_the_token_or_rpc_password(
    tmp_path: Path, tree: Path, github: FakeGitHub, osv: FakeOSV
) -> None:
    from tests.support.cli import clean_env, run_cli

    github.require_token(TOKEN)
    password = "Rpc-Secret-9f8e7d"
    with FakeBitcoind(password=password) as bitcoind, FakeStacksNode() as stacks:
        bitcoind.network = default_network_info(240100)  # unmaintained: REL-003 fails
        config = tmp_path / "sbtc-ops.toml"
        config.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            "[audit]\n"
            f'compose_files = ["{tree}/srv/signer/docker-compose.yml"]\n'
            f'github_api_url = "{github.url}"\n'
            f'github_token = "{TOKEN}"\n'
            f'osv_api_url = "{osv.url}"\n'
            "osv_python = false\n"
            f'dpkg_status = "{tree}/var/lib/dpkg/status"\n'
            f'bitcoin_rpc_url = "{bitcoind.rpc_url()}"\n'
            f'stacks_node_url = "{stacks.url}"\n'
        )
        env = clean_env(tmp_path / "state")
        html = tmp_path / "report.html"
        runs = [
            run_cli("--config", str(config), "audit", "--only", "releases,nodes", "--json",
                    cwd=tmp_path, env=env),
            run_cli("--config", str(config), "audit", "--only", "releases,nodes", "--html",
                    str(html), cwd=tmp_path, env=env),
        ]  # fmt: skip
    assert [r.code for r in runs] == [1, 1]
    found = {f["id"]: f["status"] for f in runs[0].json()["findings"]}
    assert found["REL-003"] == "fail"
    assert found["REL-001"] == "pass"  # the token was accepted
    assert found["NODE-001"] == "pass"  # so was the password
    for text in [r.stdout + r.stderr for r in runs] + [html.read_text()]:
        assert TOKEN not in text
        assert password not in text
    assert github.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
