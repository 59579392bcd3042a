"""Find the signer's compose deployment and derive sbtc-ops' settings, each with its source."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sbtc_ops.discover import docker_api as api
from sbtc_ops.errors import ConfigError, DependencyError, UsageError
from sbtc_ops.host.compose import Project, Service, find_compose_files, load_project, service_env
from sbtc_ops.host.roles import SIGNER_CONFIG_TARGET
from sbtc_ops.redact import redact_url

# Where operators put the reference deployment (stacks-sbtc/sbtc docker/mainnet), in order.
STANDARD_DIRS = (
    Path("/opt/sbtc/docker/mainnet"),
    Path("/opt/sbtc"),
    Path("/opt/signer"),
    Path("/opt/sbtc-signer"),
    Path("/srv/sbtc"),
    Path("/srv/signer"),
)
NODE_WORDS = ("bitcoin", "stacks")
DB_ENDPOINT_VAR = "SIGNER_SIGNER__DB_ENDPOINT"
KEY_VAR = "SIGNER_SIGNER__PRIVATE_KEY"


@dataclass(frozen=True)
class Fact:
    value: Any
    source: str


@dataclass
class Discovery:
    facts: dict[str, Fact] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, value: Any, source: str) -> None:
        if value is not None and value != [] and value != {}:
            self.facts[key] = Fact(value, source)

    def value(self, key: str) -> Any:
        fact = self.facts.get(key)
        return fact.value if fact else None

    @property
    def found(self) -> bool:
        """A deployment was found: a compose project whose signer service has a config file
        or a database endpoint (without either there is nothing for sbtc-ops to work on)."""
        usable = "signer.config_path" in self.facts or "db.endpoint" in self.facts
        return "compose.dir" in self.facts and "signer.service" in self.facts and usable

    def describe(self) -> dict[str, Any]:
        return {
            "found": {k: {"value": f.value, "source": f.source} for k, f in self.facts.items()},
            "missing": list(self.missing),
            "notes": list(self.notes),
        }

    def settings_layer(self) -> dict[str, Any]:
        """The sbtc-ops settings these facts give (secrets referenced, never copied)."""
        layer: dict[str, Any] = {}
        docker: dict[str, Any] = {}
        for key, name in (
            ("compose.dir", "compose_dir"),
            ("compose.files", "compose_files"),
            ("signer.service", "signer_service"),
            ("db.service", "db_service"),
            ("db.container", "db_container"),
        ):
            if self.value(key) is not None:
                docker[name] = self.value(key)
        if docker:
            layer["docker"] = docker
        if self.value("signer.config_path"):
            layer["signer"] = {"config_path": self.value("signer.config_path")}
        audit: dict[str, Any] = {}
        if self.value("signer.metrics_url"):
            audit["metrics_url"] = self.value("signer.metrics_url")
        if self.value("signer.info_url"):
            audit["signer_info_url"] = self.value("signer.info_url")
        if audit:
            layer["audit"] = audit
        return layer


def discover(
    compose_dir: Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    standard_dirs: tuple[Path, ...] = STANDARD_DIRS,
) -> Discovery:
    found = Discovery()
    containers = _running_containers(found, environ)
    directory, files = _project_location(found, compose_dir, cwd or Path.cwd(), containers)
    if directory is None:
        directory, files = _standard_location(found, standard_dirs)
    if directory is None:
        found.missing.append(
            "a compose project: no --compose-dir, no compose file in the current directory, "
            "no running sBTC signer container, nothing in " + ", ".join(map(str, standard_dirs))
        )
        return found
    try:
        project = load_project(directory, files)
    except ConfigError as exc:
        found.missing.append(f"the compose project in {directory}: {exc}")
        return found
    _describe_project(found, project, containers)
    return found


# -- where the project is ---------------------------------------------------------------


def _running_containers(
    found: Discovery, environ: Mapping[str, str] | None
) -> list[dict[str, Any]]:
    socket = api.docker_socket(environ)
    if socket is None:
        found.notes.append("DOCKER_HOST is not a unix socket: running containers not read")
        return []
    with api.DockerApi(socket, timeout_s=3.0) as docker:
        if not docker.available():
            found.notes.append(f"no Docker engine answers at {socket}: running containers not read")
            return []
        try:
            containers = docker.containers()
            digests: dict[str, list[str]] = {}
            for container in containers:
                image_id = str(container.get("Image") or "")
                if image_id not in digests:
                    digests[image_id] = list(
                        (docker.image(image_id) or {}).get("RepoDigests") or []
                    )
                container["_RepoDigests"] = digests[image_id]
        except DependencyError as exc:
            found.notes.append(str(exc))
            return []
    found.notes.append(f"read {len(containers)} running container(s) from {socket}")
    return containers


def _is_signer_container(container: Mapping[str, Any]) -> bool:
    mounts = container.get("Mounts") or []
    if any(str(m.get("Destination", "")) == SIGNER_CONFIG_TARGET for m in mounts):
        return True
    return api.labels(container).get(api.SERVICE_LABEL) == "sbtc-signer"


def _project_location(
    found: Discovery, compose_dir: Path | None, cwd: Path, containers: list[dict[str, Any]]
) -> tuple[Path | None, list[Path]]:
    if compose_dir is not None:
        directory = compose_dir.resolve()
        files = find_compose_files(directory)
        if not files:
            raise UsageError(f"--compose-dir {compose_dir}: no compose file in it")
        found.add("compose.dir", str(directory), "--compose-dir")
        _add_files(found, directory, files, containers)
        return directory, files
    files = find_compose_files(cwd.resolve())
    if files and any(load_safe(cwd.resolve(), files)):
        found.add("compose.dir", str(cwd.resolve()), "the current directory")
        return cwd.resolve(), _add_files(found, cwd.resolve(), files, containers)
    signer = next((c for c in containers if _is_signer_container(c)), None)
    if signer is None:
        return None, []
    labels = api.labels(signer)
    working_dir = labels.get(api.WORKING_DIR_LABEL)
    if not working_dir:
        found.notes.append(f"container {api.container_name(signer)} has no compose labels")
        return None, []
    directory = Path(working_dir)
    files = _label_files(signer) or find_compose_files(directory)
    source = f"container {api.container_name(signer)}: label {api.WORKING_DIR_LABEL}"
    found.add("compose.dir", str(directory), source)
    found.add(
        "compose.files",
        [str(f) for f in files],
        f"container {api.container_name(signer)}: label {api.CONFIG_FILES_LABEL}",
    )
    return directory, files


def _label_files(container: Mapping[str, Any]) -> list[Path]:
    """The compose files a running container was started from (its compose labels)."""
    labels = api.labels(container)
    directory = Path(labels.get(api.WORKING_DIR_LABEL, "/"))
    names = [n for n in labels.get(api.CONFIG_FILES_LABEL, "").split(",") if n]
    return [f for f in (directory / n for n in names) if f.is_file()]


def _add_files(
    found: Discovery, directory: Path, files: list[Path], containers: list[dict[str, Any]]
) -> list[Path]:
    """The project's files: those the running signer was started with, if it runs from this
    directory (compose may have been given other -f files than the ones found here)."""
    for container in containers:
        working_dir = api.labels(container).get(api.WORKING_DIR_LABEL)
        if _is_signer_container(container) and working_dir and Path(working_dir) == directory:
            started_with = _label_files(container)
            if started_with:
                source = (
                    f"container {api.container_name(container)}: label {api.CONFIG_FILES_LABEL}"
                )
                found.add("compose.files", [str(f) for f in started_with], source)
                return started_with
    found.add("compose.files", [str(f) for f in files], f"compose files in {directory}")
    return files


def load_safe(directory: Path, files: list[Path]) -> list[Service]:
    """The services of a project that mounts the signer config, or none."""
    try:
        project = load_project(directory, files)
    except ConfigError:
        return []
    service = project.service_with_mount(SIGNER_CONFIG_TARGET)
    return [service] if service else []


def _standard_location(found: Discovery, dirs: tuple[Path, ...]) -> tuple[Path | None, list[Path]]:
    for directory in dirs:
        files = find_compose_files(directory)
        if files and load_safe(directory, files):
            found.add("compose.dir", str(directory), "standard path")
            found.add("compose.files", [str(f) for f in files], f"compose files in {directory}")
            return directory, files
    return None, []


# -- what the project says ----------------------------------------------------------------


def _describe_project(found: Discovery, project: Project, containers: list[dict[str, Any]]) -> None:
    ours = [c for c in containers if _belongs(c, project)]
    by_service = {api.labels(c).get(api.SERVICE_LABEL, ""): c for c in ours}
    found.add("compose.project", _project_name(project, ours), "compose label or directory name")
    if project.env_file:
        found.add("compose.env_file", str(project.env_file), "the project directory")
    signer = project.service_with_mount(SIGNER_CONFIG_TARGET) or project.services.get("sbtc-signer")
    if signer is None:
        found.missing.append(f"a signer service (one that mounts {SIGNER_CONFIG_TARGET})")
        return
    where = f"{signer.files[-1]} service {signer.name}"
    found.add("signer.service", signer.name, where)
    container = by_service.get(signer.name)
    if container:
        found.add("signer.container", api.container_name(container), "running container")
    _signer_config(found, project, signer, container, where)
    env = service_env(project, signer)
    signer_vars = sorted(k for k in env if k.startswith("SIGNER_"))
    found.add("signer.env", signer_vars, f"{where} environment, interpolated with .env")
    _secret_sources(found, project, env)
    config_doc = _read_config(found.value("signer.config_path"))
    _database(found, project, env, config_doc, by_service)
    _endpoints(found, signer, container, config_doc, where)
    _nodes(found, project, signer, env)
    _images_and_logging(found, project, by_service)
    if not container:
        found.notes.append("the signer's container is not running: facts come from compose files")


def _belongs(container: Mapping[str, Any], project: Project) -> bool:
    working_dir = api.labels(container).get(api.WORKING_DIR_LABEL)
    return bool(working_dir) and Path(str(working_dir)).resolve() == project.directory.resolve()


def _project_name(project: Project, containers: list[dict[str, Any]]) -> str:
    for container in containers:
        name = api.labels(container).get(api.PROJECT_LABEL)
        if name:
            return name
    return project.directory.name


def _signer_config(
    found: Discovery,
    project: Project,
    signer: Service,
    container: Mapping[str, Any] | None,
    where: str,
) -> None:
    for mount in (container or {}).get("Mounts") or []:
        if str(mount.get("Destination")) == SIGNER_CONFIG_TARGET and mount.get("Source"):
            found.add(
                "signer.config_path",
                str(mount["Source"]),
                f"container {api.container_name(container or {})}: mount of {SIGNER_CONFIG_TARGET}",
            )
            return
    for source, target in signer.volumes():
        if target.rstrip("/") == SIGNER_CONFIG_TARGET:
            found.add(
                "signer.config_path", str(project.host_path(source)), f"{where} volume {target}"
            )
            return
    found.missing.append(f"the signer config (no mount of {SIGNER_CONFIG_TARGET})")


def _read_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _env_origin(project: Project, value: str) -> str | None:
    """The .env variable a secret value came from (compose interpolated it in)."""
    for name, candidate in project.env.items():
        if candidate and candidate == value:
            return name
    return None


def _secret_sources(found: Discovery, project: Project, env: dict[str, str]) -> None:
    key = env.get(KEY_VAR)
    if key:
        origin = _env_origin(project, key)
        source = f"{project.env_file} {origin}" if origin else "the compose file itself"
        found.add("signer.private_key_source", f"{KEY_VAR} <- {source}", "compose interpolation")
    else:
        found.missing.append(f"the signer's private key ({KEY_VAR} not set for the signer)")


def _database(
    found: Discovery,
    project: Project,
    env: dict[str, str],
    config_doc: dict[str, Any],
    by_service: dict[str, dict[str, Any]],
) -> None:
    url = env.get(DB_ENDPOINT_VAR) or str((config_doc.get("signer") or {}).get("db_endpoint") or "")
    if not url:
        found.missing.append(f"the signer's database ({DB_ENDPOINT_VAR} / [signer] db_endpoint)")
        return
    parts = urlsplit(url)
    source = DB_ENDPOINT_VAR if env.get(DB_ENDPOINT_VAR) else "signer config db_endpoint"
    found.add("db.endpoint", redact_url(url), source)
    host = parts.hostname or ""
    password = unquote(parts.password or "")
    if password:
        origin = _env_origin(project, password)
        found.add(
            "db.credentials",
            f"user {unquote(parts.username or '')}, password from "
            + (f"{project.env_file} {origin}" if origin else source),
            source,
        )
    service = project.service_for_host(host)
    if service is None:
        found.notes.append(f"the database host {host} is not a compose service")
        return
    found.add("db.service", service.name, f"{DB_ENDPOINT_VAR} host {host}")
    container = by_service.get(service.name)
    if container:
        found.add("db.container", api.container_name(container), "running container")
    elif service.body.get("container_name"):
        found.add("db.container", service.container_name, f"{service.files[-1]} container_name")
    else:
        found.missing.append(
            f"the database container's name (service {service.name} is not running and sets "
            "no container_name): backups through `docker exec` need docker.db_container"
        )
    found.add("db.published", bool(service.body.get("ports")), f"{service.name} ports")
    if container:
        networks = sorted((container.get("NetworkSettings") or {}).get("Networks") or {})
        found.add("db.networks", networks, f"container {api.container_name(container)}")


def _port(bind: str | None) -> int | None:
    if not bind:
        return None
    try:
        return int(str(bind).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _host_url(
    signer: Service, container: Mapping[str, Any] | None, port: int, path: str
) -> tuple[str, str] | None:
    """(URL on the host, source) for a published container port; engine first."""
    if container:
        bindings = ((container.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp")
        for binding in bindings or []:
            host_ip = str(binding.get("HostIp") or "0.0.0.0")  # noqa: S104 - reading it
            if ":" in host_ip:
                continue
            host = "127.0.0.1" if host_ip == "0.0.0.0" else host_ip  # noqa: S104
            return f"http://{host}:{binding['HostPort']}{path}", "engine: published port"
    for entry in signer.body.get("ports") or []:
        parts = str(entry).rsplit(":", 2) if not isinstance(entry, dict) else []
        if parts and parts[-1].split("/")[0] == str(port):
            host_ip = parts[0] if len(parts) == 3 else "127.0.0.1"
            host = "127.0.0.1" if host_ip in ("", "0.0.0.0") else host_ip  # noqa: S104
            published = parts[-2] if len(parts) >= 2 else str(port)
            return f"http://{host}:{published}{path}", f"{signer.name} ports {entry}"
    return None


def _endpoints(
    found: Discovery,
    signer: Service,
    container: Mapping[str, Any] | None,
    config_doc: dict[str, Any],
    where: str,
) -> None:
    section = config_doc.get("signer") or {}
    metrics_port = _port(section.get("prometheus_exporter_endpoint"))
    info_port = _port((section.get("event_observer") or {}).get("bind")) or 8801
    ip = api.first_ip(container) if container else None
    for key, port, path, what in (
        ("metrics", metrics_port, "/metrics", "prometheus_exporter_endpoint"),
        ("info", info_port, "/info", "event_observer.bind"),
    ):
        if port is None:
            found.missing.append(f"the signer's {path} endpoint ({what} not set)")
            continue
        url = _host_url(signer, container, port, path)
        if url:
            found.add(f"signer.{key}_url", url[0], f"{url[1]} ({what} port {port})")
        if ip:
            found.add(
                f"signer.{key}_url_network",
                f"http://{ip}:{port}{path}",
                "container network address",
            )
        if not url and not ip:
            found.missing.append(f"a way to reach the signer's {path} (port {port} unpublished)")


def _nodes(found: Discovery, project: Project, signer: Service, env: dict[str, str]) -> None:
    nodes = {}
    for service in project.services.values():
        text = f"{service.name} {service.image or ''}".lower()
        if service is not signer and any(word in text for word in NODE_WORDS):
            nodes[service.name] = {"image": service.image, "file": str(service.files[-1])}
    found.add("nodes.services", nodes, "compose services named or imaged bitcoin/stacks")
    rpc = {}
    for name, label in (
        ("SIGNER_BITCOIN__RPC_ENDPOINTS", "bitcoin"),
        ("SIGNER_STACKS__ENDPOINTS", "stacks"),
    ):
        if env.get(name):
            rpc[label] = [redact_url(u.strip()) for u in env[name].split(",")]
    found.add("nodes.rpc", rpc, "the signer's SIGNER_*__ENDPOINTS")


def _images_and_logging(
    found: Discovery, project: Project, by_service: dict[str, dict[str, Any]]
) -> None:
    images: dict[str, Any] = {}
    logging: dict[str, Any] = {}
    for name, service in project.services.items():
        ref = service.image or ""
        entry: dict[str, Any] = {"image": ref, "pinned": "@sha256:" in ref}
        container = by_service.get(name)
        if container:
            entry["image_id"] = str(container.get("Image", ""))
            entry["repo_digests"] = container.get("_RepoDigests") or []
        images[name] = entry
        config = (container or {}).get("HostConfig", {}).get("LogConfig") if container else None
        if config:
            logging[name] = {"driver": config.get("Type"), "options": config.get("Config") or {}}
        else:
            declared = service.body.get("logging") or {}
            logging[name] = {
                "driver": declared.get("driver", "json-file (engine default)"),
                "options": declared.get("options") or {},
            }
    found.add("images", images, "compose files and running containers")
    found.add("logging", logging, "running containers (HostConfig.LogConfig), else compose files")
