"""A compose project read the way docker compose reads it: its files in order (later files
override earlier ones per service), `.env` of the project directory for interpolation, and
relative paths resolved against the project directory (the first file's directory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbtc_ops.audit.compose import interpolate_tree, service_environment
from sbtc_ops.errors import ConfigError
from sbtc_ops.files import UnsafeFileError, read_capped
from sbtc_ops.host.signer_import import read_env_file
from sbtc_ops.yamlsafe import MAX_YAML_BYTES, YamlError, load_bounded

PRIMARY_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
SIGNER_CONFIG_TARGET = "/signer-config.toml"


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
    """The services of one compose file, interpolated; bounded (sbtc_ops.yamlsafe): the file
    may be anyone's, and every command reads it when docker.compose_dir is set."""
    try:
        text = read_capped(path, MAX_YAML_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnsafeFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        doc = load_bounded(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
            raise ConfigError(f"{path}: not a compose file (no services mapping)")
        return {
            str(name): interpolate_tree(body, env) if isinstance(body, dict) else {}
            for name, body in doc["services"].items()
        }
    except YamlError as exc:
        raise ConfigError(f"{path}: {exc}") from None


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
