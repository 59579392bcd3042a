"""sshd's effective configuration: `sshd -T` when it runs, else the config files + defaults.

`sshd -T` is the truth (Include drop-ins, Match blocks for the given connection, defaults,
lowercase keys). It needs root and the privilege-separation directory; when it cannot run, or
when auditing a directory tree, sshd_config and its Includes are parsed with OpenSSH's rule
"the first obtained value wins", Match blocks ignored, and the documented defaults filled in.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from sbtc_ops.audit.framework import CommandTimeout, HostContext, Skip

log = logging.getLogger(__name__)

SSHD_CONFIG = "/etc/ssh/sshd_config"
# An outside address (TEST-NET-3): Match Address blocks that loosen rules for internal
# networks must not hide what an attacker from the internet is offered.
OUTSIDE_ADDR = "203.0.113.1"

# sshd_config(5) defaults that matter to the checks (OpenSSH 9.x).
DEFAULT_ALGORITHMS = (
    "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,"
    "ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,"
    "sk-ssh-ed25519-cert-v01@openssh.com,sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,"
    "rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,"
    "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,"
    "sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256"
)
DEFAULTS: dict[str, str] = {
    "port": "22",
    "permitrootlogin": "prohibit-password",
    "passwordauthentication": "yes",
    "kbdinteractiveauthentication": "yes",
    "permitemptypasswords": "no",
    "hostbasedauthentication": "no",
    "pubkeyauthentication": "yes",
    "authenticationmethods": "any",
    "pubkeyacceptedalgorithms": DEFAULT_ALGORITHMS,
    "pubkeyauthoptions": "none",
    "authorizedkeysfile": ".ssh/authorized_keys .ssh/authorized_keys2",
    "authorizedkeyscommand": "none",
    "trustedusercakeys": "none",
    "usepam": "no",
}
# Old names sshd still accepts; `sshd -T` prints the new ones.
ALIASES = {
    "challengeresponseauthentication": "kbdinteractiveauthentication",
    "pubkeyacceptedkeytypes": "pubkeyacceptedalgorithms",
}
MULTI = {"port", "listenaddress", "hostkey", "include"}


@dataclass(frozen=True)
class SshdView:
    """One evaluation of sshd's configuration (for a given user, or the global one)."""

    label: str
    source: str
    options: dict[str, list[str]]

    def get(self, key: str) -> str:
        values = self.options.get(key)
        if values:
            return values[0]
        return DEFAULTS.get(key, "")

    def all(self, key: str) -> list[str]:
        return self.options.get(key) or ([DEFAULTS[key]] if key in DEFAULTS else [])


def parse_sshd_t(text: str) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and value:
            options.setdefault(key.lower(), []).append(value.strip())
    if "port" not in options or "passwordauthentication" not in options:
        raise ValueError("this is not `sshd -T` output (no port/passwordauthentication lines)")
    return options


def effective_views(ctx: HostContext) -> list[SshdView]:
    """The global view plus one per `audit.ssh_users` (their Match blocks applied)."""
    return ctx.memo("sshd.views", lambda: _compute_views(ctx))


def _compute_views(ctx: HostContext) -> list[SshdView]:
    users = ctx.settings.audit.ssh_users
    try:
        views = [_sshd_t(ctx, ["sshd", "-T"], "global")]
        views += [
            _sshd_t(
                ctx,
                ["sshd", "-T", "-C", f"user={user},host=unknown,addr={OUTSIDE_ADDR}"],
                f"user {user}",
            )
            for user in users
        ]
        return views
    except (Skip, CommandTimeout) as exc:
        why = str(exc)
    text = ctx.read_optional(SSHD_CONFIG)
    if text is None:
        raise Skip(f"sshd not evaluated ({why}) and {SSHD_CONFIG} does not exist")
    options = parse_config(ctx, text, PurePosixPath(SSHD_CONFIG).parent, depth=0)
    log.info("sshd -T not used (%s); reading %s", why, SSHD_CONFIG)
    return [SshdView("global", f"{SSHD_CONFIG}; {why}", options)]


def _sshd_t(ctx: HostContext, argv: list[str], label: str) -> SshdView:
    result = ctx.run_ok(argv)
    try:
        options = parse_sshd_t(result.stdout)
    except ValueError as exc:
        raise Skip(f"`{' '.join(argv)}`: {exc}") from None
    return SshdView(label, "sshd -T", options)


def parse_config(
    ctx: HostContext, text: str, base: PurePosixPath, depth: int
) -> dict[str, list[str]]:
    """sshd_config with Includes; first value wins; everything after `Match` is conditional."""
    if depth > 8:
        raise Skip("sshd_config Include nesting deeper than 8")
    options: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.replace("=", " ", 1).partition(" ")
        key = ALIASES.get(key.lower(), key.lower())
        value = value.strip()
        if key == "match":
            break
        if key == "include":
            for pattern in shlex.split(value):
                full = pattern if pattern.startswith("/") else str(base / pattern)
                for path in ctx.glob(full):
                    included = ctx.read_optional(path) or ""
                    for k, v in parse_config(ctx, included, base, depth + 1).items():
                        _merge(options, k, v)
            continue
        _merge(options, key, [value])
    _expand_algorithms(options)
    return options


def _merge(options: dict[str, list[str]], key: str, values: list[str]) -> None:
    if key in MULTI:
        options.setdefault(key, []).extend(values)
    elif key not in options:
        options[key] = values[:1]


def _expand_algorithms(options: dict[str, list[str]]) -> None:
    """`+alg` appends to, `-alg` removes from and `^alg` prepends to the default list."""
    value = (options.get("pubkeyacceptedalgorithms") or [""])[0]
    if not value or value[0] not in "+-^":
        return
    default = DEFAULT_ALGORITHMS.split(",")
    given = value[1:].split(",")
    if value[0] == "+":
        merged = default + [a for a in given if a not in default]
    elif value[0] == "^":
        merged = given + [a for a in default if a not in given]
    else:
        merged = [a for a in default if a not in given]
    options["pubkeyacceptedalgorithms"] = [",".join(merged)]


def ssh_ports(ctx: HostContext) -> set[int]:
    ports: set[int] = set()
    for view in effective_views(ctx):
        for value in view.all("port"):
            if value.isdigit():
                ports.add(int(value))
    return ports or {22}
