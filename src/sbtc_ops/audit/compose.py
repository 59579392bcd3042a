"""docker compose files as the audit needs them: services, images, published ports, env.

Interpolation follows compose: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
`$VAR`, `$$` for a literal `$`; values come from the `.env` file next to the compose file.
YAML anchors and `<<` merge keys (used by the reference deployment) are resolved by the loader
(sbtc_ops.yamlsafe: bounded, aliases shared, never copied: interpolate_tree memoizes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sbtc_ops.audit.framework import EvidenceError, HostContext, Skip
from sbtc_ops.errors import ConfigError
from sbtc_ops.host.signer_import import read_env_file
from sbtc_ops.yamlsafe import YamlError, load_bounded

_VAR = re.compile(
    r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)
LOOPBACK_HOSTS = ("127.", "::1", "localhost")
MAX_RANGE = 256


@dataclass(frozen=True)
class PublishedPort:
    service: str
    host_ip: str  # "" means every interface
    published: int | None  # None: an ephemeral host port
    target: int
    protocol: str
    compose_file: str

    @property
    def all_interfaces(self) -> bool:
        return self.host_ip in ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - detecting it

    @property
    def loopback(self) -> bool:
        return self.host_ip.strip("[]").startswith(LOOPBACK_HOSTS)

    def describe(self) -> str:
        host = self.host_ip or "0.0.0.0"  # noqa: S104 - describing it
        published = self.published if self.published is not None else "(random)"
        return f"{self.service}: {host}:{published}->{self.target}/{self.protocol}"


@dataclass
class ComposeFile:
    path: PurePosixPath
    services: dict[str, dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    env_file: PurePosixPath | None = None

    @property
    def directory(self) -> PurePosixPath:
        return self.path.parent


def interpolate(value: str, env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        current = env.get(name)
        if op in (":-", ":?"):
            return current if current else ("" if op == ":?" else arg)
        if op in ("-", "?"):
            return current if current is not None else ("" if op == "?" else arg)
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return arg if current is not None else ""
        return current or ""

    return _VAR.sub(replace, value)


# What interpolation may produce in all (the document itself is bounded by yamlsafe).
MAX_INTERPOLATED_BYTES = 16 << 20


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """`node` with every string interpolated. A node reached twice (a YAML alias) is done
    once and its result shared, so the work is linear in the document, not in its alias
    expansion; YamlError when the results exceed MAX_INTERPOLATED_BYTES."""
    done: dict[int, Any] = {}
    budget = [MAX_INTERPOLATED_BYTES]

    def visit(item: Any) -> Any:
        key = id(item)
        if key in done:
            return done[key]
        if isinstance(item, str):
            result: Any = interpolate(item, env)
            budget[0] -= len(result)
            if budget[0] < 0:
                raise YamlError(f"interpolated values exceed {MAX_INTERPOLATED_BYTES >> 20} MiB")
        elif isinstance(item, list):
            result = [visit(child) for child in item]
        elif isinstance(item, dict):
            result = {str(k): visit(v) for k, v in item.items()}
        else:
            result = item
        done[key] = result
        return result

    return visit(node)


def compose_files(ctx: HostContext) -> list[ComposeFile]:
    """Every configured compose file, parsed; a broken file is a Skip naming it."""
    return ctx.memo("compose.files", lambda: _load_all(ctx))


def compose_files_if_configured(ctx: HostContext) -> list[ComposeFile]:
    """Like compose_files, but none (not a Skip) when none is configured or readable."""
    try:
        return compose_files(ctx)
    except Skip:
        return []


def compose_paths_with_env(ctx: HostContext) -> list[str]:
    """Each compose file and the .env beside it (compose reads both); none when not configured."""
    return [
        path
        for compose in compose_files_if_configured(ctx)
        for path in (str(compose.path), str(PurePosixPath(compose.path).parent / ".env"))
    ]


def _load_all(ctx: HostContext) -> list[ComposeFile]:
    paths = ctx.settings.docker.compose_paths()
    if not paths:
        raise Skip("no compose files configured (docker.compose_files)")
    return [_load(ctx, PurePosixPath(str(path))) for path in paths]


def _load(ctx: HostContext, path: PurePosixPath) -> ComposeFile:
    text = ctx.read_text(path)
    env_path = path.parent / ".env"
    env: dict[str, str] = {}
    if ctx.exists(env_path):
        ctx.read_text(env_path)  # a regular file of bounded size (never a FIFO, /dev/zero)
        try:
            env = read_env_file(ctx.host_path(env_path))
        except ConfigError as exc:
            raise Skip(str(exc)) from None
    try:
        doc = load_bounded(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
            raise EvidenceError(f"{path}: not a compose file (no services mapping)")
        services = {
            str(name): interpolate_tree(body, env) if isinstance(body, dict) else {}
            for name, body in doc["services"].items()
        }
    except YamlError as exc:
        raise EvidenceError(f"{path}: {exc}") from None
    return ComposeFile(path, services, env, env_path if env else None)


def published_ports(files: list[ComposeFile]) -> list[PublishedPort]:
    ports: list[PublishedPort] = []
    for compose in files:
        for name, service in compose.services.items():
            for entry in service.get("ports") or []:
                ports.extend(_parse_port(name, entry, str(compose.path)))
    return ports


def _parse_port(service: str, entry: Any, source: str) -> list[PublishedPort]:
    if isinstance(entry, dict):
        target = _int(entry.get("target"))
        if target is None:
            return []
        return [
            PublishedPort(
                service,
                str(entry.get("host_ip", "")),
                _int(str(entry.get("published", "")).split("-")[0]),
                target,
                str(entry.get("protocol", "tcp")),
                source,
            )
        ]
    text = str(entry)
    spec, _, protocol = text.partition("/")
    host_ip = ""
    if spec.startswith("["):  # [::1]:8080:80
        host_ip, _, spec = spec[1:].partition("]")
        spec = spec.lstrip(":")
    parts = spec.split(":")
    if len(parts) == 3:
        host_ip, published_text, target_text = parts
    elif len(parts) == 2:
        published_text, target_text = parts
    else:
        published_text, target_text = "", parts[0]
    targets = _range(target_text)
    hosts: list[int | None] = (
        list(_range(published_text)) if published_text else [None] * len(targets)
    )
    if not targets or len(hosts) != len(targets):
        return []
    return [
        PublishedPort(service, host_ip, pub, tgt, protocol or "tcp", source)
        for pub, tgt in zip(hosts, targets, strict=True)
    ]


def _range(text: str) -> list[int]:
    low_text, _, high_text = text.partition("-")
    low, high = _int(low_text), _int(high_text or low_text)
    if low is None or high is None or high < low or high - low >= MAX_RANGE:
        return []
    return list(range(low, high + 1))


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def command_text(service: dict[str, Any]) -> str:
    """A service's entrypoint and command as one string (to look for flags)."""
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value:
            parts.append(str(value))
    return " ".join(parts)


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {name: value for name, _, value in pairs}
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    return {}
