"""The one compose reader: services, images, published ports, env, read the way docker
compose reads them, for the audit (files under --root, through HostContext) and for discovery
(a project directory: its files in order, later files overriding earlier ones per service,
relative paths resolved against the project directory).

Interpolation follows compose: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
`$VAR`, `$$` for a literal `$`; values come from the `.env` file next to the compose file.
YAML anchors and `<<` merge keys (used by the reference deployment) are resolved by the loader
(sbtc_ops.yamlsafe: bounded, aliases shared, never copied: interpolate_tree memoizes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sbtc_ops.errors import ConfigError
from sbtc_ops.files import UnsafeFileError, read_capped
from sbtc_ops.host.context import HostContext
from sbtc_ops.host.errors import EvidenceError, Unavailable
from sbtc_ops.host.signer_import import read_env_file
from sbtc_ops.yamlsafe import MAX_YAML_BYTES, YamlError, load_bounded

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


class ComposeError(ConfigError):
    """A compose file that cannot be read as one (invalid YAML, past the bounds, no services)."""


def parse_services(
    text: str | bytes, env: dict[str, str], where: object
) -> dict[str, dict[str, Any]]:
    """The services of one compose document, interpolated with `env`; bounded (yamlsafe:
    size, alias expansion, nesting) because the file may be anyone's. ComposeError naming
    `where` when it is not a compose file."""
    try:
        doc = load_bounded(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
            raise ComposeError(f"{where}: not a compose file (no services mapping)")
        return {
            str(name): interpolate_tree(body, env) if isinstance(body, dict) else {}
            for name, body in doc["services"].items()
        }
    except YamlError as exc:
        raise ComposeError(f"{where}: {exc}") from None


# -- compose files of the audited host (through HostContext, honouring --root) --------------


def compose_files(ctx: HostContext) -> list[ComposeFile]:
    """Every configured compose file, parsed: a missing or unreadable one is Unavailable, one
    that is not a compose file (or past the YAML bounds) an EvidenceError, each naming it."""
    return ctx.memo("compose.files", lambda: _load_all(ctx))


def compose_files_if_configured(ctx: HostContext) -> list[ComposeFile]:
    """Like compose_files, but none (not Unavailable) when none is configured or readable."""
    try:
        return compose_files(ctx)
    except Unavailable:
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
        raise Unavailable("no compose files configured (docker.compose_files)")
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
            raise Unavailable(str(exc)) from None
    try:
        services = parse_services(text, env, path)
    except ComposeError as exc:
        raise EvidenceError(exc.message) from None
    return ComposeFile(path, services, env, env_path if env else None)


# -- published ports, commands, environment --------------------------------------------------


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


# -- a compose project on this machine (discovery) -------------------------------------------

PRIMARY_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


@dataclass
class Service:
    name: str
    body: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def container_name(self) -> str:
        return str(self.body.get("container_name") or self.name)

    @property
    def image(self) -> str | None:
        image = self.body.get("image")
        return str(image) if image else None

    def environment(self) -> dict[str, str]:
        return service_environment(self.body)

    def volumes(self) -> list[tuple[str, str]]:
        """(source, target) of each volume; short and long syntax."""
        found = []
        for entry in self.body.get("volumes") or []:
            if isinstance(entry, str):
                parts = entry.split(":")
                if len(parts) >= 2:
                    found.append((parts[0], parts[1]))
            elif isinstance(entry, dict) and entry.get("target"):
                found.append((str(entry.get("source") or ""), str(entry["target"])))
        return found


@dataclass
class Project:
    directory: Path
    files: list[Path]
    env: dict[str, str]
    env_file: Path | None
    services: dict[str, Service]

    def host_path(self, source: str) -> Path:
        path = Path(source).expanduser()
        return path if path.is_absolute() else (self.directory / path).resolve()

    def service_with_mount(self, target: str) -> Service | None:
        for service in self.services.values():
            if any(t.rstrip("/") == target for _, t in service.volumes()):
                return service
        return None

    def service_for_host(self, host: str) -> Service | None:
        """The service a hostname on the compose network names (service or container name)."""
        for service in self.services.values():
            if host in (service.name, service.container_name):
                return service
        return None


def find_compose_files(directory: Path) -> list[Path]:
    """The project's files: the first primary file, then docker-compose*.y*ml beside it and
    one directory down (the reference keeps its nodes in nodes/docker-compose.chains.yml)."""
    primary = next((directory / n for n in PRIMARY_NAMES if (directory / n).is_file()), None)
    if primary is None:
        return []
    extra = sorted(
        p
        for pattern in ("docker-compose.*.y*ml", "*/docker-compose*.y*ml", "*/compose*.y*ml")
        for p in directory.glob(pattern)
        if p.is_file() and p != primary and "override" not in p.name
    )
    return [primary, *extra]


def load_project(directory: Path, files: list[Path]) -> Project:
    env_file = directory / ".env"
    env = read_env_file(env_file) if env_file.is_file() else {}
    services: dict[str, Service] = {}
    for path in files:
        for name, body in _services(path, env).items():
            current = services.setdefault(name, Service(name, {}))
            current.body = {**current.body, **body}
            current.files.append(path)
    return Project(directory, files, env, env_file if env_file.is_file() else None, services)


def _services(path: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The services of one file of the project (bounded: every command reads it when
    docker.compose_dir is set); ConfigError when it cannot be read as a compose file."""
    try:
        text = read_capped(path, MAX_YAML_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnsafeFileError as exc:
        raise ConfigError(str(exc)) from None
    return parse_services(text, env, path)


def service_env(project: Project, service: Service) -> dict[str, str]:
    """A service's environment as compose builds it: env_file entries, then `environment`."""
    env: dict[str, str] = {}
    env_files = service.body.get("env_file") or []
    for entry in env_files if isinstance(env_files, list) else [env_files]:
        raw = entry.get("path") if isinstance(entry, dict) else entry
        path = project.host_path(str(raw))
        if path.is_file():
            env.update(read_env_file(path))
    env.update(service.environment())
    return env
