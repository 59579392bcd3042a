"""A small Docker Engine API client over the unix socket (httpx), read-only.

The socket comes from DOCKER_HOST (unix:// only) or /var/run/docker.sock. Every call has a
short timeout: discovery must not hang on a stuck engine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from sbtc_ops.errors import DependencyError

DEFAULT_SOCKET = Path("/var/run/docker.sock")
PROJECT_LABEL = "com.docker.compose.project"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
SERVICE_LABEL = "com.docker.compose.service"


def docker_socket(environ: Mapping[str, str] | None = None) -> Path | None:
    """The engine's unix socket, or None when DOCKER_HOST names something else (tcp://…)."""
    environ = os.environ if environ is None else environ
    host = environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return Path(host[len("unix://") :])
    return None


class DockerApi:
    def __init__(self, socket: Path, timeout_s: float = 5.0) -> None:
        self.socket = socket
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)),
            base_url="http://docker",
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DockerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, **params: str) -> Any:
        try:
            response = self._client.get(path, params=params or None)
        except httpx.HTTPError as exc:
            raise DependencyError(f"Docker API at {self.socket}: {exc}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DependencyError(
                f"Docker API at {self.socket}: GET {path} answered {response.status_code}"
            )
        try:
            return response.json()
        except ValueError:
            raise DependencyError(f"Docker API at {self.socket}: GET {path}: not JSON") from None

    def available(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self._client.get("/_ping").status_code == 200)
        except httpx.HTTPError:
            return False

    def containers(self) -> list[dict[str, Any]]:
        """Every running container, inspected (mounts, env, ports, networks, labels)."""
        listed = self._get("/containers/json") or []
        found = []
        for entry in listed:
            detail = self.inspect(str(entry.get("Id", "")))
            if isinstance(detail, dict):
                found.append(detail)
        return found

    def inspect(self, container: str) -> dict[str, Any] | None:
        doc = self._get(f"/containers/{quote(container, safe='')}/json")
        return doc if isinstance(doc, dict) else None

    def image(self, reference: str) -> dict[str, Any] | None:
        doc = self._get(f"/images/{quote(reference, safe='')}/json")
        return doc if isinstance(doc, dict) else None


def container_name(container: Mapping[str, Any]) -> str:
    return str(container.get("Name", "")).lstrip("/")


def labels(container: Mapping[str, Any]) -> dict[str, str]:
    found = (container.get("Config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in found.items()}


def env_names(container: Mapping[str, Any]) -> list[str]:
    return [str(e).partition("=")[0] for e in (container.get("Config") or {}).get("Env") or []]


def first_ip(container: Mapping[str, Any]) -> str | None:
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    for network in networks.values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    return None
