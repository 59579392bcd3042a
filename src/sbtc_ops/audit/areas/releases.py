"""Releases and vulnerabilities: running versions vs the newest releases; OSV advisories.

Running versions: the signer's image tag (compose files, else `docker ps`), the Stacks node's
``server_version`` (``/v2/info``, else its image tag), Bitcoin Core's ``getnetworkinfo``
version (else its image tag). Newest releases: the GitHub releases API
(``GET /repos/{owner}/{repo}/releases?per_page=100``; the three repositories are fetched
concurrently), cached in the state directory for ``audit.release_cache_ttl_s`` and used from
the cache, whatever its age, when GitHub cannot be reached. ``audit.github_token`` raises
the rate limit (60 requests/hour without); it is sent as a header and never shown.

Vulnerabilities: OSV ``POST /v1/querybatch`` for the host's Debian/Ubuntu packages (source
package names and versions from the dpkg status file, as OSV's Debian records use) and for
sbtc-ops' own Python dependencies; then ``GET /v1/vulns/{id}`` for each advisory's severity
and fixed version.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sbtc_ops.audit.framework import (
    EvidenceError,
    HostContext,
    Outcome,
    Severity,
    Skip,
    check,
    failed,
    passed,
    skip_unless,
    warned,
)
from sbtc_ops.audit.statefiles import read_state, write_state
from sbtc_ops.host.http import Malformed, fetch, require_mapping
from sbtc_ops.host.nodes import bitcoin_rpc, stacks_info
from sbtc_ops.host.roles import BITCOIN, STACKS, image_tag, role_services
from sbtc_ops.host.signer import signer_image_version
from sbtc_ops.install import inspect_environment, locked_pins

AREA = "releases"
SECTION = "Monitor releases, patch CVEs"

SBTC_REPO = "stacks-sbtc/sbtc"
STACKS_REPO = "stacks-network/stacks-core"
BITCOIN_REPO = "bitcoin/bitcoin"
CACHE_FILE = "audit-github-releases.json"
OSV_CACHE_FILE = "audit-osv-records.json"
OSV_BATCH_LIMIT = 1000
MAX_ADVISORY_DETAILS = 200
# A Debian host can have hundreds of advisories (most "unimportant"): details are fetched 8 at
# a time the first time, then come from the cache.
OSV_CHECK_TIMEOUT_S = 60.0
SHOWN_ADVISORIES = 8
# Bitcoin Core maintains the newest few major versions with point releases.
BITCOIN_MAINTAINED_MAJORS = 3

Version = tuple[int, ...]


@dataclass(frozen=True)
class Track:
    repo: str
    tag: re.Pattern[str]  # groups: the version numbers

    def version(self, tag: str) -> Version | None:
        match = self.tag.fullmatch(tag.strip())
        if match is None:
            return None
        return tuple(int(g) for g in match.groups() if g is not None)


SBTC_TRACK = Track(SBTC_REPO, re.compile(r"v?(\d+)\.(\d+)\.(\d+)"))
# stacks-core tags nodes `3.1.0.0.5` and signers `signer-3.1.0.0.5.0` in the same repository.
STACKS_TRACK = Track(STACKS_REPO, re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)\.(\d+)"))
BITCOIN_TRACK = Track(BITCOIN_REPO, re.compile(r"v(\d+)\.(\d+)(?:\.(\d+))?"))


def show(version: Version) -> str:
    return ".".join(str(n) for n in version)


def _padded(version: Version, length: int = 5) -> Version:
    return version + (0,) * (length - len(version))


# -- GitHub releases, cached ----------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    tag: str
    version: Version
    published_at: datetime
    url: str


@dataclass(frozen=True)
class ReleaseList:
    releases: list[dict[str, Any]]
    fetched_at: float
    from_cache: bool
    note: str = ""


def _trim(release: Any) -> dict[str, Any] | None:
    if not isinstance(release, dict) or not isinstance(release.get("tag_name"), str):
        return None
    keys = ("tag_name", "name", "draft", "prerelease", "published_at", "created_at", "html_url")
    return {key: release.get(key) for key in keys}


def _fetch_releases(ctx: HostContext, repo: str) -> list[dict[str, Any]]:
    audit = ctx.settings.audit
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "sbtc-ops",
    }
    if audit.github_token is not None:
        token = audit.github_token.get_secret_value()
        ctx.add_secret(token)
        headers["Authorization"] = f"Bearer {token}"
    url = f"{audit.github_api_url.rstrip('/')}/repos/{repo}/releases?per_page=100"
    what = f"GitHub releases of {repo}"
    document = fetch(ctx, "GET", url, what=what, headers=headers).json(what)
    if not isinstance(document, list):
        raise Malformed(f"{what}: expected a JSON array")
    return [trimmed for item in document if (trimmed := _trim(item)) is not None]


def release_lists(ctx: HostContext) -> dict[str, ReleaseList | Exception]:
    """Every tracked repository's releases: fresh cache, else GitHub, else a stale cache."""
    return ctx.memo("releases.github", lambda: _release_lists(ctx))


def _release_lists(ctx: HostContext) -> dict[str, ReleaseList | Exception]:
    cache = read_state(ctx, CACHE_FILE)
    ttl = ctx.settings.audit.release_cache_ttl_s
    now = time.time()
    results: dict[str, ReleaseList | Exception] = {}
    stale: list[str] = []
    for repo in (SBTC_REPO, STACKS_REPO, BITCOIN_REPO):
        entry = cache.get(repo)
        if isinstance(entry, dict) and now - float(entry.get("fetched_at", 0)) < ttl:
            results[repo] = ReleaseList(entry.get("releases") or [], entry["fetched_at"], True)
        else:
            stale.append(repo)
    with ThreadPoolExecutor(max_workers=max(1, len(stale))) as pool:
        futures = {repo: pool.submit(_fetch_releases, ctx, repo) for repo in stale}
    changed = False
    for repo, future in futures.items():
        try:
            releases = future.result()
        except (Skip, EvidenceError) as exc:
            entry = cache.get(repo)
            if isinstance(entry, dict) and isinstance(entry.get("releases"), list):
                fetched = float(entry.get("fetched_at", 0))
                when = datetime.fromtimestamp(fetched, UTC).strftime("%Y-%m-%d %H:%M UTC")
                note = f"from the cache of {when} ({exc})"
                results[repo] = ReleaseList(entry["releases"], fetched, True, note)
            else:
                results[repo] = exc
            continue
        results[repo] = ReleaseList(releases, now, False)
        cache[repo] = {"fetched_at": now, "releases": releases}
        changed = True
    if changed:
        write_state(ctx, CACHE_FILE, cache)
    return results


def stable_releases(ctx: HostContext, track: Track) -> tuple[list[Release], str]:
    """Published, non-prerelease releases of the track, newest version first; and a note."""
    result = release_lists(ctx)[track.repo]
    if isinstance(result, Exception):
        raise result
    found = []
    for item in result.releases:
        version = track.version(str(item.get("tag_name", "")))
        published = item.get("published_at")
        if version is None or item.get("draft") or item.get("prerelease") or not published:
            continue
        try:
            when = datetime.fromisoformat(str(published).replace("Z", "+00:00"))
        except ValueError:
            continue
        found.append(Release(str(item["tag_name"]), version, when, str(item.get("html_url"))))
    if not found:
        raise Skip(f"{track.repo} has no published release on GitHub")
    found.sort(key=lambda r: _padded(r.version), reverse=True)
    return found, result.note


def judge_version(
    ctx: HostContext, name: str, running: Version, releases: list[Release], note: str
) -> Outcome:
    """PASS on the newest; WARN while every newer release is within the grace period; FAIL."""
    newest = releases[0]
    newer = [r for r in releases if _padded(r.version) > _padded(running)]
    suffix = f" [{note}]" if note else ""
    data = {"running": show(running), "latest": newest.tag, "url": newest.url}
    if not newer:
        return passed(
            f"{name} {show(running)} is the newest release ({newest.tag}){suffix}", **data
        )
    first_newer = min(newer, key=lambda r: r.published_at)
    age = ctx.now - first_newer.published_at
    grace = timedelta(days=ctx.settings.audit.release_grace_days)
    text = (
        f"{name} {show(running)} is behind {newest.tag}; {first_newer.tag} was published "
        f"{age.days} days ago{suffix}"
    )
    if age <= grace:
        return warned(text, **data)
    return failed(text, **data)


# -- running versions -----------------------------------------------------------------------


def _role_images(ctx: HostContext, role: str) -> list[str]:
    try:
        services = role_services(ctx)
    except Skip:
        return []
    return [s.image for s in services if s.role == role and s.image]


def _role_tags(ctx: HostContext, role: str) -> list[str]:
    return [tag for image in _role_images(ctx, role) if (tag := image_tag(image))]


_STACKS_VERSION = re.compile(r"(\d+\.\d+\.\d+\.\d+\.\d+)")  # stacks-core 3.1.0.0.7


def stacks_version(ctx: HostContext) -> tuple[Version, str]:
    try:
        server = str(stacks_info(ctx).get("server_version", ""))
        match = _STACKS_VERSION.search(server)
        if match:
            return STACKS_TRACK.version(match.group(1)) or (), f"/v2/info {server[:60]}"
    except (Skip, EvidenceError):
        pass
    for tag in _role_tags(ctx, STACKS):
        match = _STACKS_VERSION.search(tag)
        if match:
            return STACKS_TRACK.version(match.group(1)) or (), f"compose image tag {tag}"
    raise Skip("Stacks node version unknown (no /v2/info answer and no versioned image)")


def bitcoin_version(ctx: HostContext) -> tuple[Version, str]:
    try:
        number = int(bitcoin_rpc(ctx, "getnetworkinfo").get("version", 0))
        if number > 0:
            version = (number // 10000, number // 100 % 100, number % 100)
            return version, f"getnetworkinfo {number}"
    except (Skip, EvidenceError):
        pass
    for tag in _role_tags(ctx, BITCOIN):
        match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", tag)
        if match:
            return tuple(int(g) for g in match.groups() if g is not None), f"image tag {tag}"
    raise Skip("Bitcoin Core version unknown (no RPC answer and no versioned image)")


def _release_check(
    ctx: HostContext, name: str, track: Track, running: Callable[[HostContext], tuple[Version, str]]
) -> Outcome:
    version, source = running(ctx)
    releases, note = stable_releases(ctx, track)
    outcome = judge_version(ctx, name, version, releases, note)
    outcome.data["source"] = source
    return outcome


@check(
    "REL-001",
    area=AREA,
    title="sBTC signer runs the newest release",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="sBTC signer releases carry security fixes and protocol changes the signer set "
    "upgrades to together; a lagging signer can miss signing rounds or stay vulnerable.",
    remediation="Upgrade to the newest stacks-sbtc/sbtc release "
    "(ghcr.io/stacks-sbtc/sbtc:signer-<version>@sha256:<digest>), following its release notes.",
)
def sbtc_release(ctx: HostContext) -> Outcome:
    return _release_check(ctx, "sBTC signer", SBTC_TRACK, signer_image_version)


@check(
    "REL-002",
    area=AREA,
    title="Stacks node runs the newest stacks-core release",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="stacks-core releases fix consensus and security bugs; an outdated node can fork "
    "off or fail at an epoch change.",
    remediation="Upgrade the Stacks node to the newest stacks-network/stacks-core node release.",
)
def stacks_release(ctx: HostContext) -> Outcome:
    return _release_check(ctx, "stacks-core", STACKS_TRACK, stacks_version)


@check(
    "REL-003",
    area=AREA,
    title="Bitcoin Core runs a maintained, patched release",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Bitcoin Core fixes vulnerabilities in point releases of its maintained major "
    "versions only; older majors get no fixes.",
    remediation="Upgrade Bitcoin Core to the newest point release of a maintained major "
    "version (ideally the newest release).",
)
def bitcoin_release(ctx: HostContext) -> Outcome:
    version, source = bitcoin_version(ctx)
    releases, note = stable_releases(ctx, BITCOIN_TRACK)
    newest_major = releases[0].version[0]
    if version[0] <= newest_major - BITCOIN_MAINTAINED_MAJORS:
        return failed(
            f"Bitcoin Core {show(version)} is an unmaintained major version "
            f"(newest {releases[0].tag})",
            running=show(version),
            latest=releases[0].tag,
            source=source,
        )
    same_major = [r for r in releases if r.version[0] == version[0]] or releases
    outcome = judge_version(ctx, "Bitcoin Core", version, same_major, note)
    outcome.data["source"] = source
    if outcome.status.value == "pass" and version[0] < newest_major:
        return warned(
            f"Bitcoin Core {show(version)} is patched but a newer major exists ({releases[0].tag})",
            **outcome.data,
        )
    return outcome


# -- OSV ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    ecosystem: str
    name: str
    version: str


def os_ecosystem(ctx: HostContext) -> str:
    text = ctx.read_optional("/etc/os-release") or ctx.read_optional("/usr/lib/os-release")
    if text is None:
        raise Skip("no /etc/os-release: cannot tell the distribution")
    fields = dict(
        (key, value.strip().strip('"'))
        for key, _, value in (line.partition("=") for line in text.splitlines())
        if key
    )
    distro, version = fields.get("ID", ""), fields.get("VERSION_ID", "")
    if distro == "debian" and version:
        return f"Debian:{version}"
    if distro == "ubuntu" and version:
        lts = ":LTS" if "LTS" in fields.get("VERSION", "") else ""
        return f"Ubuntu:{version}{lts}"
    raise Skip(f"OSV lookups support Debian and Ubuntu packages, not {distro or 'this OS'}")


def debian_packages(ctx: HostContext) -> list[Package]:
    """Installed packages' source names and versions from the dpkg status file."""
    path = ctx.settings.audit.dpkg_status
    text = ctx.read_optional(path)
    if text is None:
        raise Skip(f"{path} does not exist (not a Debian-based host)")
    ecosystem = os_ecosystem(ctx)
    seen: set[tuple[str, str]] = set()
    for paragraph in text.split("\n\n"):
        fields = _control_fields(paragraph)
        if "installed" not in fields.get("Status", "").split() or "Package" not in fields:
            continue
        version = fields.get("Version", "")
        source_name, _, source_version = fields.get("Source", fields["Package"]).partition(" ")
        source_version = source_version.strip().strip("()") or version
        if source_name and source_version:
            seen.add((source_name, source_version))
    return [Package(ecosystem, name, version) for name, version in sorted(seen)]


def _control_fields(paragraph: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in paragraph.splitlines():
        if not line or line[0] in " \t":
            continue  # continuation lines (descriptions, conffiles) are not needed
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def python_packages() -> list[Package]:
    """sbtc-ops' dependency set: exactly the pins of its hash lock (what the install, the
    attestations and REL-006 are about)."""
    return [Package("PyPI", name, version) for name, version in sorted(locked_pins().items())]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Advisory:
    id: str
    package: Package
    severity: str
    fixed: str | None
    summary: str

    def describe(self) -> str:
        fix = f"fixed in {self.fixed}" if self.fixed else "no fix yet"
        return f"{self.id} ({self.package.name} {self.package.version}, {self.severity}, {fix})"


def osv_advisories(ctx: HostContext, packages: list[Package]) -> list[Advisory]:
    base = ctx.settings.audit.osv_api_url.rstrip("/")
    hits: list[tuple[Package, str, str]] = []
    for start in range(0, len(packages), OSV_BATCH_LIMIT):
        chunk = packages[start : start + OSV_BATCH_LIMIT]
        hits += _query_batch(ctx, f"{base}/v1/querybatch", chunk)
    wanted = dict(sorted({(vuln_id, modified) for _, vuln_id, modified in hits}))
    records = _records(ctx, base, dict(list(wanted.items())[:MAX_ADVISORY_DETAILS]))
    return [_advisory(package, vuln_id, records.get(vuln_id)) for package, vuln_id, _ in hits]


def _query_batch(
    ctx: HostContext, url: str, chunk: list[Package]
) -> list[tuple[Package, str, str]]:
    body = {
        "queries": [
            {"package": {"ecosystem": p.ecosystem, "name": p.name}, "version": p.version}
            for p in chunk
        ]
    }
    what = "OSV querybatch"
    document = require_mapping(fetch(ctx, "POST", url, what=what, json_body=body).json(what), what)
    results = document.get("results")
    if not isinstance(results, list) or len(results) != len(chunk):
        raise Malformed(f"{what}: expected {len(chunk)} results in order")
    hits = []
    for package, result in zip(chunk, results, strict=True):
        for vuln in (result or {}).get("vulns") or []:
            if isinstance(vuln, dict) and isinstance(vuln.get("id"), str):
                hits.append((package, vuln["id"], str(vuln.get("modified", ""))))
    return hits


class RecordCache:
    """OSV records by id, kept in the state directory and reused while `modified` matches."""

    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self.entries = read_state(ctx, OSV_CACHE_FILE)

    def get(self, vuln_id: str, modified: str) -> dict[str, Any] | None:
        with self.lock:
            entry = self.entries.get(vuln_id)
        if isinstance(entry, dict) and modified and entry.get("modified") == modified:
            record = entry.get("record")
            return record if isinstance(record, dict) else None
        return None

    def put_all(self, records: dict[str, tuple[str, dict[str, Any]]]) -> None:
        if not records:
            return
        with self.lock:
            for vuln_id, (modified, record) in records.items():
                self.entries[vuln_id] = {"modified": modified, "record": _trim_record(record)}
            write_state(self.ctx, OSV_CACHE_FILE, self.entries)


def _trim_record(record: dict[str, Any]) -> dict[str, Any]:
    """What _advisory reads; per-version lists and long texts are dropped."""
    keep = ("package", "ranges", "database_specific", "ecosystem_specific")
    affected = [
        {k: a.get(k) for k in keep if k in a}
        for a in record.get("affected") or []
        if isinstance(a, dict)
    ]
    top = ("id", "summary", "severity", "database_specific")
    return {**{k: record[k] for k in top if k in record}, "affected": affected}


def _records(ctx: HostContext, base: str, wanted: dict[str, str]) -> dict[str, dict[str, Any]]:
    cache: RecordCache = ctx.memo("releases.osv-cache", lambda: RecordCache(ctx))
    found = {i: r for i, m in wanted.items() if (r := cache.get(i, m)) is not None}

    def one(vuln_id: str) -> tuple[str, dict[str, Any] | None]:
        what = f"OSV record {vuln_id}"
        try:
            reply = fetch(ctx, "GET", f"{base}/v1/vulns/{vuln_id}", what=what)
            return vuln_id, require_mapping(reply.json(what), what)
        except (Skip, EvidenceError):
            return vuln_id, None  # the id alone is still a finding

    missing = [i for i in wanted if i not in found]
    if missing:
        with ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
            fetched = {k: v for k, v in pool.map(one, missing) if v is not None}
        cache.put_all({k: (wanted[k], v) for k, v in fetched.items()})
        found.update(fetched)
    return found


def _advisory(package: Package, vuln_id: str, record: dict[str, Any] | None) -> Advisory:
    if record is None:
        return Advisory(vuln_id, package, "unknown", None, "")
    severity, fixed = "unknown", None
    for affected in record.get("affected") or []:
        if not isinstance(affected, dict):
            continue
        target = affected.get("package") or {}
        if _normalise(str(target.get("name", ""))) != _normalise(package.name):
            continue
        severity = _severity(affected, record) or severity
        for rng in affected.get("ranges") or []:
            for event in (rng or {}).get("events") or []:
                if isinstance(event, dict) and event.get("fixed"):
                    fixed = str(event["fixed"])
    if severity == "unknown":
        severity = _severity({}, record) or severity
    return Advisory(vuln_id, package, severity, fixed, str(record.get("summary", ""))[:160])


def _severity(affected: dict[str, Any], record: dict[str, Any]) -> str | None:
    for holder in (affected.get("database_specific"), record.get("database_specific")):
        if isinstance(holder, dict) and holder.get("severity"):
            return str(holder["severity"]).lower()
    specific = affected.get("ecosystem_specific")
    if isinstance(specific, dict) and specific.get("urgency"):
        return str(specific["urgency"]).lower()
    for entry in record.get("severity") or []:
        if isinstance(entry, dict) and entry.get("score"):
            return f"{entry.get('type', 'CVSS')} {entry['score']}"
    return None


# Debian triage: advisories it marks unimportant do not make the check fail.
NOT_URGENT = ("unimportant", "negligible", "not yet assigned", "end-of-life")


def judge_advisories(what: str, packages: Iterable[Package], advisories: list[Advisory]) -> Outcome:
    count = len(list(packages))
    if not advisories:
        return passed(f"no known vulnerability in {count} {what}", packages=count)
    items = [
        {
            "id": a.id,
            "package": a.package.name,
            "version": a.package.version,
            "ecosystem": a.package.ecosystem,
            "severity": a.severity,
            "fixed": a.fixed,
            "summary": a.summary,
        }
        for a in advisories
    ]
    ordered = sorted(advisories, key=lambda a: (a.fixed is None, a.severity in NOT_URGENT, a.id))
    shown = "; ".join(a.describe() for a in ordered[:SHOWN_ADVISORIES])
    more = f" and {len(ordered) - SHOWN_ADVISORIES} more" if len(ordered) > SHOWN_ADVISORIES else ""
    text = f"{len(advisories)} advisories in {count} {what}: {shown}{more}"
    urgent = [a for a in advisories if a.fixed and a.severity not in NOT_URGENT]
    data: dict[str, Any] = {"advisories": items, "packages": count}
    if urgent:
        return failed(text, **data)
    return warned(text, **data)


@check(
    "REL-004",
    area=AREA,
    timeout_s=OSV_CHECK_TIMEOUT_S,
    title="No known vulnerabilities in the host's packages (OSV)",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="The page asks operators to patch CVEs; OSV lists the advisories affecting each "
    "installed Debian/Ubuntu source package version, with the version that fixes it.",
    remediation="Install the fixed versions (`apt-get update && apt-get upgrade`), enable "
    "unattended-upgrades for security updates, and reboot or restart affected services.",
)
def host_package_vulnerabilities(ctx: HostContext) -> Outcome:
    packages = skip_unless(
        debian_packages(ctx), "no installed package found in the dpkg status file"
    )
    return judge_advisories("packages", packages, osv_advisories(ctx, packages))


@check(
    "REL-005",
    area=AREA,
    timeout_s=OSV_CHECK_TIMEOUT_S,
    title="No known vulnerabilities in sbtc-ops' Python dependencies (OSV)",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="sbtc-ops handles the signer's database, backups and key material; its own "
    "dependencies must be patched like the rest of the host.",
    remediation="Upgrade the listed Python packages to the fixed versions (reinstall sbtc-ops "
    "in a fresh virtual environment with updated dependencies).",
)
def python_vulnerabilities(ctx: HostContext) -> Outcome:
    if not ctx.settings.audit.osv_python:
        raise Skip("disabled (audit.osv_python = false)")
    packages = python_packages()
    return judge_advisories("locked Python packages", packages, osv_advisories(ctx, packages))


@check(
    "REL-006",
    area=AREA,
    title="sbtc-ops runs on exactly its locked, hash-checked dependency set",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="sbtc-ops runs as root next to the signer's key: what it imports must be what a "
    "review approved (the hash lock), not whatever a registry served on install day, and no "
    "module outside that set may be importable from its environment.",
    remediation="Reinstall into a fresh virtual environment from the lock: `pip install "
    "--require-hashes -r src/sbtc_ops/lock/runtime.lock` then `pip install --no-deps "
    "--no-build-isolation .`; remove stray modules, .pth files and PYTHONPATH entries.",
)
def locked_installation(ctx: HostContext) -> Outcome:
    report = inspect_environment()
    problems = (
        [f"not in the lock: {item}" for item in report.not_locked]
        + [f"other version: {item}" for item in report.wrong_version]
        + [f"importable but installed by no distribution: {item}" for item in report.stray]
    )
    data: dict[str, Any] = {"lock_sha256": report.lock_digest, "problems": problems[:50]}
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        return failed(f"{len(problems)} difference(s) from the lock: {shown}", None, **data)
    where = " (development checkout with its test lock)" if report.editable else ""
    return passed(
        f"{report.checked} distributions, all at their locked versions{where}; lock sha256 "
        f"{report.lock_digest[:16]}…",
        **data,
    )
