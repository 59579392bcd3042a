"""Compose-network host names made reachable from the Docker host.

The signer's URLs name compose services (`postgres:5432`, `stacks-core:20443`), which resolve
only inside the compose network. On a Linux engine the host reaches containers on a bridge
network at their addresses, so for sbtc-ops running beside the deployment each such host is
replaced by the running container's address, looked up at every run (addresses change when a
container is re-created) and never written into sbtc-ops.toml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sbtc_ops.discover import docker_api as api
from sbtc_ops.errors import ConfigError, DependencyError
from sbtc_ops.host.compose import Project, load_project, service_env

URL_VARIABLES = (
    "SIGNER_SIGNER__DB_ENDPOINT",
    "SIGNER_STACKS__ENDPOINTS",
    "SIGNER_BITCOIN__RPC_ENDPOINTS",
)


def signer_environment(
    directory: Path, files: list[Path], service: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The SIGNER_* variables compose gives the signer's container (for loading settings),
    with compose host names replaced by the running containers' addresses."""
    project = load_project(directory, files)
    found = project.services.get(service)
    if found is None:
        raise ConfigError(
            f"docker.signer_service {service!r} is not a service of {', '.join(map(str, files))}"
        )
    env = {k: v for k, v in service_env(project, found).items() if k.startswith("SIGNER_")}
    return reachable_env(env, service_addresses(project, environ))


def service_addresses(project: Project, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{service or container name: address} for the project's running containers."""
    socket = api.docker_socket(os.environ if environ is None else environ)
    if socket is None:
        return {}
    with api.DockerApi(socket, timeout_s=3.0) as docker:
        if not docker.available():
            return {}
        try:
            containers = docker.containers()
        except DependencyError:
            return {}
    addresses: dict[str, str] = {}
    for container in containers:
        labels = api.labels(container)
        service = project.services.get(labels.get(api.SERVICE_LABEL, ""))
        ip = api.first_ip(container)
        if service is None or ip is None or not _same_dir(labels, project):
            continue
        addresses[service.name] = ip
        addresses[service.container_name] = ip
    return addresses


def _same_dir(labels: dict[str, str], project: Project) -> bool:
    working_dir = labels.get(api.WORKING_DIR_LABEL)
    if not working_dir:
        return False
    return os.path.realpath(working_dir) == os.path.realpath(project.directory)


def _rewrite(url: str, addresses: dict[str, str]) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return url
    if not host or host not in addresses:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    address = addresses[host] + (f":{port}" if port else "")
    new_netloc = f"{netloc[0]}@{address}" if len(netloc) == 2 else address
    return urlunsplit(parts._replace(netloc=new_netloc))


def reachable_env(env: dict[str, str], addresses: dict[str, Any]) -> dict[str, str]:
    """`env` with compose host names in the signer's URL variables replaced by addresses."""
    if not addresses:
        return env
    out = dict(env)
    for name in URL_VARIABLES:
        if out.get(name):
            urls = [_rewrite(u.strip(), addresses) for u in out[name].split(",")]
            out[name] = ",".join(urls)
    return out
