"""The running deployment, as the Docker engine reports it (API over its unix socket).

Compose files say what was meant; the engine says what runs: ports actually published,
containers' users and privileges, log drivers, image digests, restart policies, the
environment anyone with `docker inspect` can read, and the signer's endpoints on the
container network. Live audits only (not with --root); skipped when no engine answers.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from sbtc_ops.audit.framework import (
    HostContext,
    Outcome,
    Severity,
    Skip,
    check,
    failed,
    passed,
    warned,
)
from sbtc_ops.discover import docker_api as api
from sbtc_ops.errors import DependencyError
from sbtc_ops.host.roles import SIGNER_CONFIG_TARGET

AREA = "containers"
SECTION = "Containers (running deployment)"
# Ports that must never be reachable beyond the host, and those that should not be.
NEVER_PUBLIC = {8801: "signer event observer (/new_block, /info)", 5432: "PostgreSQL",
                8332: "Bitcoin RPC", 18332: "Bitcoin RPC (testnet)"}  # fmt: skip
NOT_PUBLIC = {9184: "signer metrics", 20443: "Stacks RPC", 9153: "Stacks metrics"}
SECRET_NAME = re.compile(r"PRIVATE_KEY|PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY", re.I)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def containers(ctx: HostContext) -> list[dict[str, Any]]:
    """Every running container, inspected once per audit; Skip when there is no engine."""

    def compute() -> list[dict[str, Any]]:
        if not ctx.live:
            raise Skip("the running containers are only read on a live audit (not --root)")
        socket = api.docker_socket()
        if socket is None:
            raise Skip("DOCKER_HOST is not a unix socket")
        with api.DockerApi(socket, timeout_s=ctx.settings.audit.network_timeout_s) as docker:
            if not docker.available():
                raise Skip(f"no Docker engine answers at {socket}")
            try:
                found = docker.containers()
            except DependencyError as exc:
                raise Skip(str(exc)) from None
        if not found:
            raise Skip(f"no running containers (engine at {socket})")
        return found

    return ctx.memo("containers.running", compute)


def _name(container: dict[str, Any]) -> str:
    return api.container_name(container)


@check(
    "CTR-001",
    area=AREA,
    title="No secret readable in containers' environment",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Anyone who may run `docker inspect` (the docker group, monitoring agents, "
    "support bundles) reads every container's environment in clear, including the signer's "
    "private key and the database URL with its password when they are passed as variables.",
    remediation="Put the private key and DB URL in the signer's config file (0600, mounted "
    "read-only) or a Docker secret instead of `environment:`; keep the docker group empty.",
)
def env_secrets(ctx: HostContext) -> Outcome:
    exposed = []
    for container in containers(ctx):
        for entry in (container.get("Config") or {}).get("Env") or []:
            name, _, value = str(entry).partition("=")
            if value and (SECRET_NAME.search(name) or URL_WITH_PASSWORD.search(value)):
                exposed.append(f"{_name(container)}: {name}")
    if exposed:
        return failed("secrets in container environments (docker inspect shows them): "
                      + ", ".join(exposed), exposed=exposed)  # fmt: skip
    return passed("no secret-looking variable in any running container's environment")


def _bindings(container: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(container port, host ip, host port) of every published TCP port."""
    ports = (container.get("NetworkSettings") or {}).get("Ports") or {}
    found = []
    for spec, bindings in ports.items():
        port, _, proto = str(spec).partition("/")
        if proto != "tcp" or not bindings:
            continue
        for binding in bindings:
            found.append((int(port), str(binding.get("HostIp") or ""), str(binding["HostPort"])))
    return found


@check(
    "CTR-002",
    area=AREA,
    title="The engine publishes no sensitive port on every interface",
    severity=Severity.HIGH,
    section=SECTION,
    rationale="Ports Docker publishes bypass the host firewall (UFW, INPUT rules). The "
    "engine's own table is the truth: compose overrides, `docker run -p` and old containers "
    "all end up there.",
    remediation="Publish the event observer, PostgreSQL and node RPC on 127.0.0.1 only (or "
    "not at all); scrape metrics over the compose network or a loopback binding.",
)
def published_ports(ctx: HostContext) -> Outcome:
    never, should_not, every = [], [], []
    for container in containers(ctx):
        for port, host_ip, host_port in _bindings(container):
            text = f"{_name(container)}: {host_ip or '0.0.0.0'}:{host_port}->{port}"  # noqa: S104
            every.append(text)
            if host_ip not in ("", "0.0.0.0", "::"):  # noqa: S104 - detecting it
                continue
            if port in NEVER_PUBLIC:
                never.append(f"{text} ({NEVER_PUBLIC[port]})")
            elif port in NOT_PUBLIC:
                should_not.append(f"{text} ({NOT_PUBLIC[port]})")
    if never:
        return failed("published on every interface: " + ", ".join(never), published=every)
    if should_not:
        return warned("published on every interface: " + ", ".join(should_not), published=every)
    return passed(f"{len(every)} published port(s), none sensitive on every interface",
                  published=every)  # fmt: skip


@check(
    "CTR-003",
    area=AREA,
    title="No container runs privileged, on the host's namespaces, or as root",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="A privileged container, or one on the host's network or PID namespace, is the "
    "host. Root inside a container is one kernel bug away from root outside.",
    remediation="Drop `privileged`, `network_mode: host` and `pid: host`; set `user:` to an "
    "unprivileged uid where the image allows it.",
)
def privileges(ctx: HostContext) -> Outcome:
    severe, root = [], []
    for container in containers(ctx):
        host_config = container.get("HostConfig") or {}
        name = _name(container)
        if host_config.get("Privileged"):
            severe.append(f"{name}: privileged")
        for key, label in (("NetworkMode", "network"), ("PidMode", "pid")):
            if host_config.get(key) == "host":
                severe.append(f"{name}: host {label} namespace")
        user = str((container.get("Config") or {}).get("User") or "")
        if user.split(":")[0] in ("", "0", "root"):
            root.append(name)
    if severe:
        return failed(", ".join(severe), root=root)
    if root:
        return warned("running as root: " + ", ".join(root), root=root)
    return passed("no container is privileged or runs as root")


@check(
    "CTR-004",
    area=AREA,
    title="Container logs are kept, with rotation",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="json-file without max-size grows until the disk is full, and every log is "
    "lost when the container is recreated (each upgrade); `none` keeps nothing.",
    remediation="Ship logs (fluentd/journald/syslog to a 90-day sink) or set json-file/local "
    "`max-size` and `max-file`.",
)
def log_drivers(ctx: HostContext) -> Outcome:
    none, unbounded, drivers = [], [], {}
    for container in containers(ctx):
        log_config = (container.get("HostConfig") or {}).get("LogConfig") or {}
        driver = str(log_config.get("Type") or "")
        drivers[_name(container)] = driver
        if driver == "none":
            none.append(_name(container))
        elif driver in ("json-file", "local") and not (log_config.get("Config") or {}).get(
            "max-size"
        ):
            unbounded.append(f"{_name(container)} ({driver})")
    if none:
        return failed("no logs kept: " + ", ".join(none), drivers=drivers)
    if unbounded:
        return warned("logs without max-size: " + ", ".join(unbounded), drivers=drivers)
    return passed("every container's log driver ships or rotates", drivers=drivers)


@check(
    "CTR-005",
    area=AREA,
    title="Running images come from a registry digest",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="An image with no registry digest was built or loaded locally: nobody can "
    "check it against a release attestation, and a tag can point at anything.",
    remediation="Run release images pinned as `image: repo:tag@sha256:…` and verify the "
    "attestation (`gh attestation verify oci://…`).",
)
def image_digests(ctx: HostContext) -> Outcome:
    socket = api.docker_socket()
    assert socket is not None  # containers() skipped otherwise
    unverifiable = []
    seen: dict[str, bool] = {}
    with api.DockerApi(socket, timeout_s=ctx.settings.audit.network_timeout_s) as docker:
        for container in containers(ctx):
            image_id = str(container.get("Image") or "")
            if image_id not in seen:
                image = docker.image(image_id) or {}
                seen[image_id] = bool(image.get("RepoDigests"))
            if not seen[image_id]:
                ref = str((container.get("Config") or {}).get("Image") or image_id)
                unverifiable.append(f"{_name(container)} ({ref})")
    if unverifiable:
        return warned("images with no registry digest: " + ", ".join(unverifiable))
    return passed("every running image has a registry digest")


@check(
    "CTR-006",
    area=AREA,
    title="Containers restart after a crash or reboot",
    severity=Severity.LOW,
    section=SECTION,
    rationale="With restart policy `no`, a crash or a host reboot leaves the signer, its "
    "database or its nodes down until someone notices.",
    remediation="Set `restart: unless-stopped` (or `on-failure`) on every service.",
)
def restart_policies(ctx: HostContext) -> Outcome:
    none = [
        _name(c)
        for c in containers(ctx)
        if str(((c.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no") == "no"
    ]
    if none:
        return warned("no restart policy: " + ", ".join(none))
    return passed("every running container has a restart policy")


def _port(bind: str | None, default: int) -> int:
    try:
        return int(str(bind).rsplit(":", 1)[1]) if bind else default
    except (IndexError, ValueError):
        return default


def _signer(ctx: HostContext) -> dict[str, Any]:
    for container in containers(ctx):
        mounts = container.get("Mounts") or []
        if any(str(m.get("Destination")) == SIGNER_CONFIG_TARGET for m in mounts):
            return container
        if api.labels(container).get(api.SERVICE_LABEL) == "sbtc-signer":
            return container
    raise Skip(f"no running sBTC signer container (none mounts {SIGNER_CONFIG_TARGET})")


@check(
    "CTR-007",
    area=AREA,
    title="The signer's /metrics and /info answer on the container network",
    severity=Severity.MEDIUM,
    section=SECTION,
    rationale="Monitoring inside the compose network (Prometheus, vector, sbtc-ops) reaches "
    "the signer at its container address; a signer whose endpoints do not answer there is "
    "unmonitored whatever the host ports say.",
    remediation="Set prometheus_exporter_endpoint (e.g. 0.0.0.0:9184) and keep "
    "event_observer.bind on 0.0.0.0:8801 inside the container.",
)
def signer_endpoints(ctx: HostContext) -> Outcome:
    signer = _signer(ctx)
    ip = api.first_ip(signer)
    if ip is None:
        raise Skip(f"container {_name(signer)} has no network address")
    answers: list[str] = []
    problems: list[str] = []
    signer_settings = ctx.settings.signer
    metrics = _port(signer_settings.prometheus_exporter_endpoint, 9184)
    info = _port(signer_settings.event_observer_bind, 8801)
    for port, path in ((metrics, "/metrics"), (info, "/info")):
        url = f"http://{ip}:{port}{path}"
        try:
            response = httpx.get(url, timeout=ctx.settings.audit.network_timeout_s)
        except httpx.HTTPError as exc:
            problems.append(f"{url}: {type(exc).__name__}")
            continue
        ok = response.status_code == 200 and (path != "/metrics" or 'app="signer"' in response.text)
        (answers if ok else problems).append(f"{url}: {response.status_code}")
    if problems:
        return failed("; ".join(problems), answered=answers)
    return passed(" and ".join(answers))
