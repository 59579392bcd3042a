"""Secrets: inventoried, rotated on time, not default or weak, not readable by others.

No secret value is ever put in a finding: findings name where a secret is and why it is weak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from sbtc_ops.audit.framework import (
    PUBLIC_DEFAULT_PASSWORDS,
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
from sbtc_ops.audit.inventory import roster, secrets_inventory
from sbtc_ops.audit.secretfiles import files_holding
from sbtc_ops.host.compose import (
    compose_files_if_configured,
    compose_paths_with_env,
    service_environment,
)
from sbtc_ops.redact import redact_url, url_credentials

AREA = "secrets"
SECTION = "Secrets managed and rotated"

MIN_PASSWORD_LENGTH = 12
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|PRIVATE_KEY|API_KEY|TOKEN|ACCESS_KEY)", re.I)


@check(
    "SEC-001",
    area=AREA,
    title="A secrets inventory exists and is well-formed",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="Secrets can only be rotated on schedule if someone knows which exist, where they "
    "live, who owns them and when they were last changed.",
    remediation="Keep a secrets.toml listing every secret ([[secret]] name, location, owner, "
    "last_rotated, max_age_days) and point audit.secrets_inventory at it.",
)
def inventory_present(ctx: HostContext) -> Outcome:
    try:
        inventory = secrets_inventory(ctx)
    except Skip as exc:
        return warned(str(exc))
    if inventory.problems:
        return warned(
            f"{inventory.path}: {len(inventory.problems)} malformed entries: "
            + "; ".join(inventory.problems),
            items=inventory.problems,
        )
    if not inventory.secrets:
        return warned(f"{inventory.path} lists no secret")
    return passed(f"{len(inventory.secrets)} secrets inventoried in {inventory.path}")


@check(
    "SEC-002",
    area=AREA,
    title="Every secret was rotated within its maximum age",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="A long-lived secret has had more chances to leak (former staff, old backups, "
    "logs); the page asks for secrets to be rotated.",
    remediation="Rotate the listed secrets, then update last_rotated in the inventory.",
)
def rotation_due(ctx: HostContext) -> Outcome:
    inventory = secrets_inventory(ctx)
    today = ctx.now.date()
    warn_days = ctx.settings.audit.rotation_warn_days
    overdue, soon = [], []
    for secret in inventory.secrets:
        due = secret.last_rotated + timedelta(days=secret.max_age_days)
        item = {"name": secret.name, "owner": secret.owner, "due": due.isoformat()}
        if due < today:
            overdue.append({**item, "days_overdue": (today - due).days})
        elif (due - today).days <= warn_days:
            soon.append({**item, "days_left": (due - today).days})
    if overdue:
        listed = ", ".join(f"{i['name']} ({i['days_overdue']} days overdue)" for i in overdue)
        return failed(f"rotation overdue: {listed}", items=overdue + soon)
    if soon:
        listed = ", ".join(f"{i['name']} (due {i['due']})" for i in soon)
        return warned(f"rotation due within {warn_days} days: {listed}", items=soon)
    if not inventory.secrets:
        raise Skip("the inventory lists no secret")
    return passed(f"all {len(inventory.secrets)} secrets within their maximum age")


# -- weak credentials ----------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    where: str
    user: str
    password: str


def _from_url(where: str, url: str) -> Credential | None:
    # Read as its client reads it: libpq for database URLs ('#', '?' and '@' in passwords).
    credentials = url_credentials(url)
    if credentials is None:
        return None
    user, password = credentials
    if not password:
        return None
    return Credential(f"{where} {redact_url(url)}", user, password)


def credentials(ctx: HostContext) -> list[Credential]:
    found: list[Credential] = []
    settings = ctx.settings
    db_url = settings.effective_db_url
    if db_url is not None:
        cred = _from_url("database URL", db_url.get_secret_value())
        if cred:
            found.append(cred)
    for endpoint in settings.signer.bitcoin_rpc_endpoints:
        cred = _from_url("Bitcoin RPC endpoint", endpoint.get_secret_value())
        if cred:
            found.append(cred)
    for compose in compose_files_if_configured(ctx):
        for name, service in compose.services.items():
            for key, value in service_environment(service).items():
                where = f"{compose.path} {name}.{key}"
                if "://" in value:
                    cred = _from_url(where, value)
                    if cred:
                        found.append(cred)
                elif "PASSWORD" in key.upper() and value:
                    found.append(Credential(where, "", value))
    for cred in found:
        ctx.add_secret(cred.password)
    return found


def weakness(cred: Credential) -> str | None:
    password = cred.password
    if password.lower() in PUBLIC_DEFAULT_PASSWORDS:
        return "a well-known default password"
    if cred.user and password.lower() == cred.user.lower():
        return "the password equals the user name"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"shorter than {MIN_PASSWORD_LENGTH} characters"
    if len(set(password)) <= 3:
        return "too few distinct characters"
    return None


@check(
    "SEC-003",
    area=AREA,
    title="No default or weak credentials",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="The devenv's postgres:postgres and devnet:devnet are published in the sBTC "
    "repository; a deployment started from it keeps them unless someone changes them.",
    remediation="Generate long random passwords (`openssl rand -base64 32`) for the database "
    "and Bitcoin RPC, update the signer's db_endpoint / rpc_endpoints and the services.",
)
def weak_credentials(ctx: HostContext) -> Outcome:
    creds = skip_unless(
        credentials(ctx), "no credentials found (database URL, Bitcoin RPC endpoints, compose env)"
    )
    weak = [
        {"where": cred.where, "user": cred.user, "problem": problem}
        for cred in creds
        if (problem := weakness(cred)) is not None
    ]
    if weak:
        listed = "; ".join(f"{w['where']}: {w['problem']}" for w in weak)
        return failed(f"weak credentials: {listed}", items=weak)
    return passed(f"{len(creds)} credentials checked; none default, short or trivial")


# -- files holding secrets -----------------------------------------------------------------


def secret_files(ctx: HostContext) -> list[str]:
    """Files that may hold secrets: the signer's config and env, compose files and .env."""
    settings = ctx.settings
    paths = [settings.signer.config_path, settings.signer.env_file, settings.signer.key_file]
    candidates = [str(p) for p in paths if p is not None]
    candidates += list(settings.source_files)
    if settings.backup.identity_file is not None:
        candidates.append(str(settings.backup.identity_file))
    candidates += compose_paths_with_env(ctx)
    return list(dict.fromkeys(ctx.show(path) for path in candidates))


_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z0-9_.\-]+)\s*[=:]\s*(.*)$")
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^@\s/${}]+@", re.I)


def holds_secret(text: str) -> str | None:
    """The name of the first secret-looking assignment or URL password, without the value."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if match and SECRET_NAME.search(match.group(1)):
            value = match.group(2).strip().strip("\"'")
            if value and not value.startswith(("$", "*")) and "${" not in value:
                return f"{match.group(1)} (line {number})"
        if _URL_PASSWORD.search(line):
            return f"a URL with a password (line {number})"
        if ("BEGIN" in line and "PRIVATE KEY" in line) or line.startswith("AGE-SECRET-KEY-"):
            return f"a private key (line {number})"
    return None


@check(
    "SEC-004",
    area=AREA,
    title="Files holding secrets are readable by their owner only",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="A .env or signer-config.toml readable by group or others hands the database "
    "password, RPC credentials or the signer key to every local account and process; the "
    "signer's opsec page says chmod 600.",
    remediation="`chmod 600` each listed file (owned by the account that runs the service).",
)
def secret_file_modes(ctx: HostContext) -> Outcome:
    found, errors = files_holding(ctx, secret_files(ctx), holds_secret)
    exposed = [
        {"file": f.path, "mode": f"{f.mode:o}", "holds": f.holds} for f in found if f.exposed
    ]
    private = [f.path for f in found if not f.exposed]
    unreadable = [str(exc) for _, exc in errors]
    if exposed:
        listed = "; ".join(f"{e['file']} (mode {e['mode']}, {e['holds']})" for e in exposed)
        return failed(f"secrets readable beyond the owner: {listed}", items=exposed)
    if unreadable and not private:
        raise Skip("; ".join(unreadable))
    if not private:
        raise Skip("no file with a secret found (signer config, env file, compose files)")
    return passed(f"{len(private)} file(s) with secrets, all owner-only: {', '.join(private)}")


@check(
    "SEC-005",
    area=AREA,
    title="Secrets were rotated after administrators left",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="A former administrator may still know every secret that existed while they "
    "had access; only rotation revokes that knowledge.",
    remediation="Rotate the listed secrets and record the new last_rotated date.",
)
def rotated_after_departures(ctx: HostContext) -> Outcome:
    admins = roster(ctx)
    inventory = secrets_inventory(ctx)
    departed = [a for a in admins if a.removed is not None]
    stale = [
        {
            "secret": s.name,
            "admin": a.name,
            "removed": str(a.removed),
            "rotated": str(s.last_rotated),
        }
        for a in departed
        for s in inventory.secrets
        if a.removed is not None and s.last_rotated < a.removed
    ]
    if stale:
        listed = "; ".join(
            f"rotate {i['secret']} (last rotated {i['rotated']}, {i['admin']} left {i['removed']})"
            for i in stale
        )
        return warned(listed, items=stale)
    if not departed:
        return passed(f"no administrator left ({len(admins)} on the roster)")
    return passed(f"every secret rotated after the last of {len(departed)} departures")
