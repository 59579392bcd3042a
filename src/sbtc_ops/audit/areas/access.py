"""Access control: hardware 2FA (FIDO keys only), no password paths, least privilege.

Lynis' SSH tests do not look at PasswordAuthentication or key algorithms, and evaluate sshd
for a non-existent user so real users' Match blocks are missed; these checks do both.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import psycopg

from sbtc_ops.audit.framework import (
    HostContext,
    HostFileError,
    Outcome,
    Severity,
    Skip,
    check,
    failed,
    passed,
    warned,
)
from sbtc_ops.audit.sshd import SshdView, effective_views
from sbtc_ops.host.compose import (
    compose_files,
    compose_files_if_configured,
    service_environment,
)
from sbtc_ops.redact import parse_dsn, url_credentials

AREA = "access"
SECTION = "Hardware 2FA, least privilege, 4-eyes"

FIDO_PREFIXES = ("sk-", "webauthn-sk-")
NO_LOGIN_SHELLS = ("nologin", "false", "sync", "shutdown", "halt")


def _is_fido(algorithm: str) -> bool:
    return algorithm.startswith(FIDO_PREFIXES)


def _verdict(
    ctx: HostContext, judge: Callable[[SshdView], tuple[str, str]], ok_text: str
) -> Outcome:
    """Run judge(view) -> (status, text) on every sshd view; the worst of them decides."""
    views = effective_views(ctx)
    problems = []
    for view in views:
        status, text = judge(view)
        if status != "pass":
            problems.append((status, text, view))
    source = views[0].source
    if not problems:
        return passed(f"{ok_text} ({source})")
    # The same problem in several views (global, user X) is named once with all of them.
    labels: dict[str, list[str]] = {}
    for _, text, view in problems:
        labels.setdefault(text, []).append(view.label)
    texts = [
        f"{text} ({', '.join(names)})" if len(views) > 1 else text for text, names in labels.items()
    ]
    detail = "; ".join(texts) + f" [{source}]"
    if any(status == "fail" for status, _, _ in problems):
        return failed(detail)
    return warned(detail)


@check(
    "SSH-001",
    area=AREA,
    title="SSH password authentication disabled",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="A password can be phished or guessed; the page asks for hardware 2FA. "
    "OpenSSH enables password authentication by default.",
    remediation="Set `PasswordAuthentication no` and `PermitEmptyPasswords no` in "
    "/etc/ssh/sshd_config (and in every drop-in and Match block), then `systemctl reload ssh`.",
)
def password_auth(ctx: HostContext) -> Outcome:
    def judge(view: SshdView) -> tuple[str, str]:
        if view.get("passwordauthentication") != "no":
            return "fail", "passwordauthentication yes"
        if view.get("permitemptypasswords") != "no":
            return "fail", "permitemptypasswords yes"
        return "pass", ""

    return _verdict(ctx, judge, "password authentication is off")


def _pam_u2f(ctx: HostContext) -> bool:
    text = ctx.read_optional("/etc/pam.d/sshd") or ""
    return any(
        "pam_u2f.so" in line and not line.lstrip().startswith("#") for line in text.splitlines()
    )


@check(
    "SSH-002",
    area=AREA,
    title="SSH keyboard-interactive authentication disabled",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Keyboard-interactive is a second password path through PAM; it defaults to "
    "yes. The only acceptable use is a hardware second factor such as pam_u2f.",
    remediation="Set `KbdInteractiveAuthentication no` (older OpenSSH: "
    "`ChallengeResponseAuthentication no`) and reload sshd.",
)
def kbd_interactive(ctx: HostContext) -> Outcome:
    def judge(view: SshdView) -> tuple[str, str]:
        if view.get("kbdinteractiveauthentication") == "no":
            return "pass", ""
        methods = view.get("authenticationmethods")
        if "publickey,keyboard-interactive" in methods and _pam_u2f(ctx):
            return "warn", "keyboard-interactive after publickey with pam_u2f: verify manually"
        return "fail", "kbdinteractiveauthentication yes"

    return _verdict(ctx, judge, "keyboard-interactive authentication is off")


@check(
    "SSH-003",
    area=AREA,
    title="SSH root login disabled",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Root logins are not attributable to a person (no 4-eyes trail) and give a "
    "stolen key full control. The signer opsec page says: disable SSH root login.",
    remediation="Set `PermitRootLogin no`; administrators log in as themselves and use sudo.",
)
def root_login(ctx: HostContext) -> Outcome:
    def judge(view: SshdView) -> tuple[str, str]:
        value = view.get("permitrootlogin")
        if value == "no":
            return "pass", ""
        if value in ("prohibit-password", "without-password", "forced-commands-only"):
            return "warn", f"permitrootlogin {value} (root may log in with a key)"
        return "fail", f"permitrootlogin {value}"

    return _verdict(ctx, judge, "root login is off")


@check(
    "SSH-004",
    area=AREA,
    title="sshd accepts only FIDO (sk-) public-key algorithms",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Only keys held in a hardware authenticator (sk-ssh-ed25519@openssh.com, "
    "sk-ecdsa-sha2-nistp256@openssh.com) make SSH a hardware second factor; sshd's default "
    "list also accepts software keys that can be copied off a laptop.",
    remediation="Set `PubkeyAcceptedAlgorithms sk-ssh-ed25519@openssh.com,"
    "sk-ecdsa-sha2-nistp256@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,"
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com` (OpenSSH ≥ 8.5; earlier "
    "PubkeyAcceptedKeyTypes) after every administrator has enrolled a FIDO key.",
)
def fido_algorithms(ctx: HostContext) -> Outcome:
    software_keys = _software_keys_present(ctx)

    def judge(view: SshdView) -> tuple[str, str]:
        algorithms = [a for a in view.get("pubkeyacceptedalgorithms").split(",") if a]
        others = [a for a in algorithms if not _is_fido(a)]
        if not others:
            return "pass", ""
        text = f"{len(others)} non-FIDO algorithms accepted (e.g. {', '.join(others[:3])})"
        if software_keys is False:
            return "warn", text + "; every authorized key found is FIDO"
        return "fail", text + (
            "; non-FIDO authorized keys exist" if software_keys else "; keys not inventoried"
        )

    return _verdict(ctx, judge, "only FIDO algorithms are accepted")


def _software_keys_present(ctx: HostContext) -> bool | None:
    try:
        inventory = authorized_keys(ctx)
    except Skip:
        return None
    return any(not _is_fido(key.algorithm) for key in inventory.keys)


# -- authorized_keys inventory -------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizedKey:
    user: str
    file: str
    line: int
    algorithm: str
    comment: str
    fingerprint: str
    options: str

    def describe(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "file": self.file,
            "line": self.line,
            "type": self.algorithm,
            "comment": self.comment,
            "fingerprint": self.fingerprint,
        }


@dataclass
class KeyInventory:
    keys: list[AuthorizedKey]
    files: list[str]
    unreadable: list[str]
    loose_files: list[str]
    cert_authorities: list[str]


_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-sha2-|sk-|webauthn-sk-|rsa-sha2-)\S*$")


def split_options(line: str) -> tuple[str, str]:
    """authorized_keys line → (options, rest); options may hold quoted spaces and commas."""
    first = line.split(None, 1)[0]
    if _KEY_TYPE.match(first):
        return "", line
    in_quotes = False
    for index, char in enumerate(line):
        if char == '"' and (index == 0 or line[index - 1] != "\\"):
            in_quotes = not in_quotes
        elif char in " \t" and not in_quotes:
            return line[:index], line[index:].strip()
    return line, ""


def fingerprint(blob_b64: str) -> str:
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except ValueError:
        return "(invalid base64)"
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def parse_authorized_keys(text: str, user: str, path: str) -> tuple[list[AuthorizedKey], int]:
    """The keys in one file and the number of cert-authority lines."""
    keys: list[AuthorizedKey] = []
    authorities = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        options, rest = split_options(line)
        fields = rest.split(None, 2)
        if len(fields) < 2:
            continue
        if "cert-authority" in options.lower():
            authorities += 1
        comment = fields[2] if len(fields) > 2 else ""
        keys.append(
            AuthorizedKey(user, path, number, fields[0], comment, fingerprint(fields[1]), options)
        )
    return keys, authorities


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    home: str
    shell: str


def login_accounts(ctx: HostContext) -> list[Account]:
    """root and every account with a login shell, from /etc/passwd."""
    text = ctx.read_text("/etc/passwd")
    accounts = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit():
            continue
        name, uid, home, shell = fields[0], int(fields[2]), fields[5], fields[6]
        if name == "root" or not shell.rsplit("/", 1)[-1].startswith(NO_LOGIN_SHELLS):
            accounts.append(Account(name, uid, home, shell))
    return accounts


def _key_files(view: SshdView, account: Account) -> list[str]:
    value = view.get("authorizedkeysfile")
    if value.lower() == "none":
        return []
    files = []
    for token in shlex.split(value):
        path = token.replace("%h", account.home).replace("%u", account.name)
        path = path.replace("%U", str(account.uid)).replace("%%", "%")
        files.append(path if path.startswith("/") else f"{account.home.rstrip('/')}/{path}")
    return files


def authorized_keys(ctx: HostContext) -> KeyInventory:
    return ctx.memo("access.authorized_keys", lambda: _inventory(ctx))


def _inventory(ctx: HostContext) -> KeyInventory:
    view = effective_views(ctx)[0]
    inventory = KeyInventory([], [], [], [], [])
    for account in login_accounts(ctx):
        for path in _key_files(view, account):
            try:
                text = ctx.read_optional(path)
                if text is None:
                    continue
                info = ctx.stat(path)
            except HostFileError:
                inventory.unreadable.append(path)
                continue
            inventory.files.append(path)
            # sshd's StrictModes refuses group/other-writable files; others may swap keys in.
            if info.st_mode & 0o022 or (ctx.live and info.st_uid not in (0, account.uid)):
                inventory.loose_files.append(f"{path} (mode {info.st_mode & 0o777:o})")
            keys, authorities = parse_authorized_keys(text, account.name, path)
            inventory.keys.extend(keys)
            if authorities:
                inventory.cert_authorities.append(path)
    return inventory


@check(
    "SSH-005",
    area=AREA,
    title="Every authorized SSH key is a FIDO hardware key",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="A software key in any authorized_keys file is a login that bypasses hardware "
    "2FA. Every account that can log in is inventoried, by type, comment and fingerprint.",
    remediation="Replace each listed key with a FIDO key (`ssh-keygen -t ed25519-sk -O "
    "verify-required`) and remove the old line; keep authorized_keys mode 600.",
)
def authorized_keys_fido(ctx: HostContext) -> Outcome:
    inventory = authorized_keys(ctx)
    software = [key for key in inventory.keys if not _is_fido(key.algorithm)]
    view = effective_views(ctx)[0]
    data: dict[str, Any] = {
        "items": [key.describe() for key in software],
        "files": inventory.files,
        "fido_keys": sum(1 for key in inventory.keys if _is_fido(key.algorithm)),
    }
    if software:
        names = "; ".join(
            f"{k.user}: {k.algorithm} {k.comment or '(no comment)'} {k.fingerprint}"
            for k in software
        )
        return failed(f"{len(software)} non-FIDO key(s): {names}", **data)
    unverifiable = []
    if view.get("authorizedkeyscommand").lower() != "none":
        unverifiable.append("AuthorizedKeysCommand supplies keys")
    if view.get("trustedusercakeys").lower() != "none":
        unverifiable.append("TrustedUserCAKeys accepts certificates")
    if inventory.cert_authorities:
        unverifiable.append(f"cert-authority lines in {', '.join(inventory.cert_authorities)}")
    if inventory.unreadable:
        unverifiable.append(f"unreadable: {', '.join(inventory.unreadable)}")
    if inventory.loose_files:
        unverifiable.append(f"writable by others: {', '.join(inventory.loose_files)}")
    if unverifiable:
        return warned(
            "keys not fully enumerable: " + "; ".join(unverifiable),
            remediation="Review keys issued by the command/CA by hand; run the audit as root; "
            "`chmod 600` authorized_keys files.",
            **data,
        )
    return passed(
        f"{data['fido_keys']} FIDO key(s) in {len(inventory.files)} file(s), no software key",
        **data,
    )


@check(
    "SSH-006",
    area=AREA,
    title="No secondary SSH authentication paths",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Host-based authentication trusts another machine; an AuthenticationMethods "
    "list without publickey lets a login skip the hardware key.",
    remediation="Set `HostbasedAuthentication no` and `AuthenticationMethods publickey` "
    "(every listed method chain must contain publickey).",
)
def secondary_paths(ctx: HostContext) -> Outcome:
    def judge(view: SshdView) -> tuple[str, str]:
        if view.get("hostbasedauthentication") != "no":
            return "fail", "hostbasedauthentication yes"
        methods = view.get("authenticationmethods")
        if methods != "any":
            chains = methods.split()
            if any("publickey" not in chain for chain in chains):
                return "fail", f"authenticationmethods {methods} allows a login without a key"
        return "pass", ""

    return _verdict(ctx, judge, "host-based off; every method chain needs a key")


@check(
    "SSH-007",
    area=AREA,
    title="FIDO keys require touch (and ideally PIN)",
    severity=Severity.LOW,
    section=SECTION,
    rationale="A FIDO key with `no-touch-required` signs without the holder's presence, so "
    "malware on a laptop with the key plugged in can log in.",
    remediation="Remove `no-touch-required` from authorized_keys; consider "
    "`PubkeyAuthOptions verify-required` so the key's PIN is needed too.",
)
def fido_presence(ctx: HostContext) -> Outcome:
    inventory = authorized_keys(ctx)
    untouched = [
        key.describe()
        for key in inventory.keys
        if _is_fido(key.algorithm) and "no-touch-required" in key.options.lower()
    ]
    if untouched:
        who = ", ".join(f"{k['user']} {k['fingerprint']}" for k in untouched)
        return warned(f"no-touch-required on {who}", items=untouched)
    options = effective_views(ctx)[0].get("pubkeyauthoptions")
    if "verify-required" in options:
        return passed("touch and PIN (verify-required) are required")
    return passed("touch is required (PIN not required: PubkeyAuthOptions verify-required)")


# -- sudo ------------------------------------------------------------------------------------


def _sudoers_files(ctx: HostContext) -> list[str]:
    main = "/etc/sudoers"
    if ctx.read_optional(main) is None:
        raise Skip("sudo is not installed (/etc/sudoers does not exist)")
    files = [main]
    text = ctx.read_text(main)
    for line in text.splitlines():
        match = re.match(r"\s*[#@]includedir\s+(\S+)", line)
        if match:
            # sudo skips names containing '.' or ending in '~' in include directories.
            files += [
                str(p)
                for p in ctx.glob(f"{match.group(1).rstrip('/')}/*")
                if "." not in p.name and not p.name.endswith("~")
            ]
        match = re.match(r"\s*[#@]include\s+(\S+)", line)
        if match:
            files.append(match.group(1))
    return files


@check(
    "SUDO-001",
    area=AREA,
    title="No passwordless sudo to ALL commands",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="`NOPASSWD: ALL` turns any session of that account (a stolen key, a compromised "
    "process) into root without a second factor.",
    remediation="Remove NOPASSWD from rules granting ALL (cloud images add one in "
    "/etc/sudoers.d/90-cloud-init-users); grant only specific commands without a password.",
)
def sudo_nopasswd(ctx: HostContext) -> Outcome:
    findings = []
    for path in _sudoers_files(ctx):
        text = ctx.read_text(path).replace("\\\n", " ")
        for line in text.splitlines():
            rule = line.split("#", 1)[0].strip()
            if not rule or rule.startswith(("Defaults", "@include", "User_Alias", "Cmnd_Alias")):
                continue
            if re.search(r"NOPASSWD\s*:\s*ALL\s*$", rule):
                findings.append({"file": path, "rule": rule})
    if findings:
        who = ", ".join(f"{f['rule'].split()[0]} ({f['file']})" for f in findings)
        return failed(f"passwordless sudo to ALL for {who}", items=findings)
    return passed("no rule grants ALL without a password")


# -- the signer's database -----------------------------------------------------------------


@check(
    "DB-001",
    area=AREA,
    title="The signer's database role is not a superuser",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="A superuser can read any file the server can, run programs (COPY … PROGRAM) and "
    "alter every role; the signer needs only its own database. The reference compose connects "
    "as `postgres`, the image's superuser.",
    remediation="Create a dedicated role that owns the signer database (`CREATE ROLE signer "
    "LOGIN PASSWORD …; ALTER DATABASE signer OWNER TO signer`) and use it in db_endpoint.",
    timeout_s=10,
)
def db_role(ctx: HostContext) -> Outcome:
    secret = ctx.settings.effective_db_url
    url = secret.get_secret_value() if secret is not None else _compose_db_endpoint(ctx)
    if url is None:
        raise Skip("signer database not configured (db.url or the signer's db_endpoint)")
    credentials = url_credentials(url) if "://" in url else _dsn_credentials(url)
    if credentials is None:
        raise Skip("the database URL cannot be parsed")
    user, password = credentials
    if password:
        ctx.add_secret(password)  # a driver error may echo the connection string
    if user == "postgres":
        return failed("the signer connects as `postgres`, the server's bootstrap superuser")
    if not ctx.live:
        raise Skip(f"connects as {user!r}; role attributes are not read when auditing --root")
    return _role_attributes(url, user)


def _dsn_credentials(dsn: str) -> tuple[str, str | None] | None:
    params = parse_dsn(dsn)
    return None if params is None else (params.get("user", ""), params.get("password"))


def _compose_db_endpoint(ctx: HostContext) -> str | None:
    """The reference compose builds SIGNER_SIGNER__DB_ENDPOINT from .env values."""
    for compose in compose_files_if_configured(ctx):
        for service in compose.services.values():
            value = service_environment(service).get("SIGNER_SIGNER__DB_ENDPOINT")
            if value:
                return value
    return None


def _role_attributes(url: str, user: str) -> Outcome:

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolbypassrls, rolreplication "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Skip(f"cannot connect to the signer database: {reason}") from None
    if row is None:
        raise Skip("the current role is not in pg_roles")
    superuser, createrole, bypassrls, replication = row
    if superuser:
        return failed(f"role {user!r} is a superuser")
    extra = [
        name
        for name, flag in (
            ("CREATEROLE", createrole),
            ("BYPASSRLS", bypassrls),
            ("REPLICATION", replication),
        )
        if flag
    ]
    if extra:
        return warned(f"role {user!r} has {', '.join(extra)}")
    return passed(f"role {user!r} is not a superuser and has no extra privileges")


_PG_DATA = "/var/lib/postgresql/data"


def pg_hba_candidates(ctx: HostContext) -> list[str]:
    paths = [str(p) for p in ctx.settings.audit.pg_hba_files]
    paths += [str(p) for p in ctx.glob("/etc/postgresql/*/main/pg_hba.conf")]
    for compose in compose_files_if_configured(ctx):
        for service in compose.services.values():
            for volume in service.get("volumes") or []:
                source, _, target = str(volume).partition(":")
                if target.split(":")[0].rstrip("/") == _PG_DATA:
                    base = PurePosixPath(source)
                    if not base.is_absolute():
                        base = compose.directory / base
                    paths.append(str(base / "pg_hba.conf"))
    return list(dict.fromkeys(paths))


def _is_loopback(address: str) -> bool:
    if address in ("localhost", "samehost"):
        return True
    try:
        return ipaddress.ip_network(address, strict=False).is_loopback
    except ValueError:
        return False


@check(
    "DB-002",
    area=AREA,
    title="PostgreSQL trusts no network client without a password",
    severity=Severity.CRITICAL,
    section=SECTION,
    rationale="A `trust` line for a network address lets anyone who reaches the port log in "
    "as any role, including the one that holds the encrypted DKG shares.",
    remediation="Replace `trust` on host lines with `scram-sha-256` in pg_hba.conf (and drop "
    "POSTGRES_HOST_AUTH_METHOD=trust from compose), then reload PostgreSQL.",
)
def pg_hba_trust(ctx: HostContext) -> Outcome:
    problems: list[dict[str, Any]] = []
    for compose in compose_files_if_configured(ctx):
        for name, service in compose.services.items():
            if service_environment(service).get("POSTGRES_HOST_AUTH_METHOD") == "trust":
                problems.append({"file": str(compose.path), "rule": f"{name}: trust for all"})
    read = []
    for path in pg_hba_candidates(ctx):
        text = ctx.read_optional(path)
        if text is None:
            continue
        read.append(path)
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split("#", 1)[0].split()
            if len(fields) < 5 or not fields[0].startswith("host"):
                continue
            address, method = fields[3], fields[4]
            if method == "trust" and not _is_loopback(address):
                problems.append({"file": path, "line": number, "rule": " ".join(fields)})
    if problems:
        rules = "; ".join(f"{p['file']}: {p['rule']}" for p in problems)
        return failed(f"trust for network clients: {rules}", items=problems)
    if not read:
        raise Skip("no pg_hba.conf found (set audit.pg_hba_files)")
    return passed(f"no network trust lines in {', '.join(read)}")


@check(
    "IMG-001",
    area=AREA,
    title="Container images are pinned by digest",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="A tag can be moved to a different image by whoever controls the registry "
    "account; a digest (`@sha256:…`) pins exactly what was reviewed.",
    remediation="Pin every image as `name:tag@sha256:<digest>` (the reference compose does); "
    "update digests deliberately, after review.",
)
def images_pinned(ctx: HostContext) -> Outcome:
    unpinned = []
    total = 0
    for compose in compose_files(ctx):
        for name, service in compose.services.items():
            image = service.get("image")
            if not image:
                continue
            total += 1
            if "@sha256:" not in str(image):
                unpinned.append({"service": name, "image": str(image), "file": str(compose.path)})
    if unpinned:
        listed = ", ".join(f"{u['service']} ({u['image']})" for u in unpinned)
        return warned(f"{len(unpinned)} of {total} images not pinned: {listed}", items=unpinned)
    if not total:
        raise Skip("no service in the compose files names an image")
    return passed(f"all {total} images pinned by digest")
