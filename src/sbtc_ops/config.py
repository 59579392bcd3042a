"""sbtc-ops settings and the signer's own configuration.

Precedence, highest first: command-line flags > SBTC_OPS_* environment > sbtc-ops.toml >
the signer's signer-config.toml (plus its SIGNER_<SECTION>__<KEY> environment) > network preset.

The file is found via --config, $SBTC_OPS_CONFIG, ./sbtc-ops.toml, /etc/sbtc-ops/sbtc-ops.toml.
Every secret is a SecretStr (or a URL whose password is redacted when shown).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from sbtc_ops.errors import ConfigError, SbtcOpsError

Network = Literal["mainnet", "testnet", "devnet"]

DEFAULT_CONFIG_PATHS = (Path("sbtc-ops.toml"), Path("/etc/sbtc-ops/sbtc-ops.toml"))
ENV_PREFIX = "SBTC_OPS_"
SIGNER_ENV_PREFIX = "SIGNER_"


class NetworkPreset(BaseModel):
    model_config = ConfigDict(frozen=True)

    deployer: str
    stacks_endpoints: tuple[str, ...]


# Deployers of the sbtc-registry contract (stacks-sbtc/sbtc deployments).
PRESETS: dict[str, NetworkPreset] = {
    "mainnet": NetworkPreset(
        deployer="SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4",
        stacks_endpoints=("https://api.hiro.so",),
    ),
    "testnet": NetworkPreset(
        deployer="SNGWPN3XDAQE673MXYXF81016M50NHF5X5PWWM70",
        stacks_endpoints=("https://api.testnet.hiro.so",),
    ),
    "devnet": NetworkPreset(
        deployer="SN3R84XZYA63QS28932XQF3G1J8R9PC3W76P9CSQS",
        stacks_endpoints=("http://127.0.0.1:20443",),
    ),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StacksSettings(_Section):
    endpoints: list[str] = Field(
        default_factory=list,
        description="Stacks node RPC endpoints to read the registry from (own node and a public API).",
    )
    api_key: SecretStr | None = Field(None, description="x-api-key header for hosted APIs.")
    connect_timeout_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(15.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    max_retry_wait_s: float = Field(
        30.0, ge=0, description="Longest wait before a retry, even if Retry-After asks for more."
    )


class DatabaseSettings(_Section):
    url: SecretStr | None = Field(
        None, description="The signer database (libpq URL). Default: the signer's db_endpoint."
    )


class S3Settings(_Section):
    url: str | None = Field(None, description="s3://bucket/prefix")
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None


class RetentionSettings(_Section):
    keep_daily: int = Field(7, ge=0)
    keep_weekly: int = Field(4, ge=0)
    keep_monthly: int = Field(12, ge=0)


class BackupSettings(_Section):
    local_dir: Path | None = Field(None, description="Local backup repository directory.")
    s3: S3Settings = Field(default_factory=S3Settings)
    format: Literal["custom", "directory"] = "custom"
    compression: str = Field(
        "gzip:1",
        description="pg_dump --compress value; gzip:1 is ~3x faster than pg_dump's default "
        "and within ~7% of its size. zstd/lz4 only if your pg_dump build supports them.",
    )
    jobs: int = Field(2, ge=1, le=64, description="Parallel dump jobs (directory format only).")
    recipients: list[str] = Field(
        default_factory=list, description="age X25519 recipients (age1…) to encrypt backups to."
    )
    identity_file: Path | None = Field(
        None, description="age identity file, needed only by verify and restore."
    )
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @field_validator("recipients")
    @classmethod
    def _age_recipients(cls, value: list[str]) -> list[str]:
        for recipient in value:
            if not recipient.startswith("age1"):
                raise ValueError(f"{recipient!r} is not an age X25519 recipient (age1…)")
        return value


class PostgresSettings(_Section):
    bin_dir: Path | None = Field(
        None, description="Directory with initdb/pg_ctl/pg_dump/pg_restore. Default: embedded."
    )
    run_as: str | None = Field(
        None, description="Unprivileged user that runs throwaway servers when invoked as root."
    )


class SignerSettings(_Section):
    """What sbtc-ops knows of the signer, mostly imported from its own config."""

    config_path: Path | None = Field(None, description="The signer's signer-config.toml.")
    env_file: Path | None = Field(None, description="An env file with SIGNER_* variables (.env).")
    db_endpoint: SecretStr | None = None
    private_key: SecretStr | None = None
    private_key_source: str | None = Field(None, description="Where the private key was found.")
    key_file: Path | None = Field(None, description="A file holding the signer's private key.")
    public_key: str | None = Field(None, description="The signer's compressed public key (hex).")
    bootstrap_signing_set: list[str] = Field(default_factory=list)
    prometheus_exporter_endpoint: str | None = None
    listen_on: list[str] = Field(default_factory=list)
    event_observer_bind: str | None = None
    bitcoin_rpc_endpoints: list[SecretStr] = Field(default_factory=list)


class AuditSettings(BaseModel):
    """Options of `sbtc-ops audit`. Areas may read further keys of their own (extra allowed)."""

    model_config = ConfigDict(extra="allow")

    compose_files: list[Path] = Field(
        default_factory=list, description="docker compose files of the signer and its nodes."
    )
    secrets_inventory: Path | None = Field(
        None, description="secrets.toml: name, location, owner, last_rotated, max_age_days."
    )
    roster_file: Path | None = Field(None, description="Administrator roster (TOML).")
    runbooks: list[Path] = Field(default_factory=list)
    allowed_ports: list[str] = Field(
        default_factory=list,
        description="Extra inbound ports allowed by policy, e.g. '8333', '20444/tcp', '4122/udp'.",
    )
    allow_node_p2p: bool = Field(
        False, description="Also allow Bitcoin P2P 8333 and Stacks P2P 20444 inbound."
    )
    ssh_users: list[str] = Field(
        default_factory=list,
        description="Administrators to evaluate sshd Match blocks for (sshd -T -C user=…).",
    )
    pg_hba_files: list[Path] = Field(default_factory=list)
    key_backup_max_age_days: int = Field(365, ge=1)
    rotation_warn_days: int = Field(14, ge=0)
    concurrency: int = Field(8, ge=1, le=64)
    check_timeout_s: float = Field(15.0, gt=0)
    command_timeout_s: float = Field(5.0, gt=0)
    # -- logs, monitoring, nodes, releases, operations (audit II) --
    network_timeout_s: float = Field(5.0, gt=0, description="Per HTTP/RPC request.")
    log_retention_days: int = Field(90, ge=1)
    log_files: list[str] = Field(
        default_factory=list, description="Globs of the signer's and nodes' local log files."
    )
    journald_conf_paths: list[Path] = Field(
        default_factory=lambda: [
            Path("/usr/lib/systemd/journald.conf.d"),
            Path("/etc/systemd/journald.conf"),
            Path("/etc/systemd/journald.conf.d"),
            Path("/run/systemd/journald.conf.d"),
        ]
    )
    logrotate_paths: list[Path] = Field(
        default_factory=lambda: [Path("/etc/logrotate.conf"), Path("/etc/logrotate.d")]
    )
    docker_daemon_json: Path = Path("/etc/docker/daemon.json")
    metrics_url: str | None = Field(
        None, description="Default: http://127.0.0.1:<port of prometheus_exporter_endpoint>/metrics"
    )
    metrics_interval_s: float = Field(
        0.5, gt=0, le=60, description="Between two scrapes when no previous audit's is usable."
    )
    signer_info_url: str | None = Field(
        None, description="Default: http://127.0.0.1:<port of event_observer.bind>/info"
    )
    tip_tolerance_blocks: int = Field(2, ge=0)
    bitcoin_rpc_url: SecretStr | None = Field(
        None, description="Default: the signer's first bitcoin.rpc_endpoints entry."
    )
    stacks_node_url: str | None = Field(None, description="Default: first stacks.endpoints.")
    stacks_node_config: Path | None = Field(None, description="The Stacks node's Config.toml.")
    chainstate_paths: list[Path] = Field(
        default_factory=list, description="Bitcoin datadir, Stacks working_dir, PostgreSQL data."
    )
    github_api_url: str = "https://api.github.com"
    github_token: SecretStr | None = None
    release_cache_ttl_s: float = Field(6 * 3600.0, ge=0)
    release_grace_days: int = Field(14, ge=0)
    osv_api_url: str = "https://api.osv.dev"
    osv_python: bool = Field(True, description="Also query sbtc-ops' own Python dependencies.")
    dpkg_status: Path = Path("/var/lib/dpkg/status")
    runbook_max_age_days: int = Field(180, ge=1)
    coverage_min_percent: float = Field(70.0, ge=0, le=100)


class DockerSettings(_Section):
    """The signer's docker compose deployment (written by `sbtc-ops init`)."""

    compose_dir: Path | None = Field(None, description="The compose project directory.")
    compose_files: list[Path] = Field(default_factory=list)
    signer_service: str = "sbtc-signer"
    db_service: str | None = None
    db_container: str | None = Field(
        None, description="Back up through `docker exec` into this container (pg_dump inside)."
    )


class ServeSettings(_Section):
    """`sbtc-ops serve`: schedules (5-field cron, local time; "" disables a job), HTTP, alerts."""

    bind: str = Field("127.0.0.1:9185", description="HOST:PORT for /metrics and the status page.")
    webhooks: list[SecretStr] = Field(
        default_factory=list,
        description="Webhook URLs notified on failure and recovery (Slack and Discord URLs get "
        "their own body shape; anything else generic JSON).",
    )
    dkg_poll_interval_s: float = Field(60.0, gt=0)
    dkg_watch: bool = Field(True, description="Back up new DKG shares as soon as they appear.")
    backup_cron: str = "17 3 * * *"
    verify_after_backup: bool = True
    verify_rotate_cron: str = Field(
        "41 4 * * 0", description="Weekly verify of an older retained backup, in rotation."
    )
    audit_cron: str = "7 * * * *"
    chain_check_cron: str = "*/10 * * * *"
    jitter_s: float = Field(120.0, ge=0, description="Random delay added to each scheduled run.")
    prune_after_backup: bool = Field(True, description="Apply backup.retention after a backup.")
    verify_jobs: int = Field(2, ge=1, le=64)
    job_timeout_s: float = Field(6 * 3600.0, gt=0, description="A run is stopped after this.")
    history_days: int = Field(400, ge=7, description="How long job runs are kept in state.db.")

    @field_validator("backup_cron", "verify_rotate_cron", "audit_cron", "chain_check_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if value.strip() and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a 5-field cron expression")
        return value.strip()


class Settings(BaseModel):
    """The effective settings. Layers are merged by load_settings (not by pydantic), so the
    documented precedence is the only one and every bad key can be traced to its layer."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    network: Network = "mainnet"
    deployer: str | None = Field(None, description="sbtc-registry deployer; default per network.")
    state_dir: Path = Field(default_factory=lambda: _default_state_dir())
    stacks: StacksSettings = Field(default_factory=StacksSettings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    signer: SignerSettings = Field(default_factory=lambda: SignerSettings())
    serve: ServeSettings = Field(default_factory=lambda: ServeSettings())
    audit: AuditSettings = Field(default_factory=lambda: AuditSettings())
    docker: DockerSettings = Field(default_factory=lambda: DockerSettings())
    key: dict[str, Any] = Field(default_factory=dict, description="Key custody options.")

    # Where the file layer came from, for messages; not a setting.
    source_files: list[str] = Field(default_factory=list, exclude=True)
    # Set when no configuration was found and the deployment was discovered instead.
    discovered_from: str | None = Field(None, exclude=True)

    # -- effective values (presets applied) ------------------------------------------------

    @property
    def preset(self) -> NetworkPreset:
        return PRESETS[self.network]

    @property
    def effective_deployer(self) -> str:
        return self.deployer or self.preset.deployer

    @property
    def effective_stacks_endpoints(self) -> list[str]:
        return list(self.stacks.endpoints) or list(self.preset.stacks_endpoints)

    @property
    def effective_db_url(self) -> SecretStr | None:
        return self.db.url or self.signer.db_endpoint


# ---------------------------------------------------------------------------------------


def _default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/sbtc-ops")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sbtc-ops"


def find_config_file(
    explicit: Path | None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The sbtc-ops.toml to use: --config / $SBTC_OPS_CONFIG must exist; defaults may not."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist or is not a file")
        return explicit
    env = environ.get("SBTC_OPS_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"config file {path} (from $SBTC_OPS_CONFIG) does not exist")
        return path
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return candidate
    return None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


# -- the signer's own configuration --------------------------------------------------------

_SIGNER_NETWORKS = {"mainnet": "mainnet", "testnet": "testnet", "regtest": "devnet"}


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a docker-compose style .env file (KEY=VALUE, # comments, optional quotes)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read env file: {exc.strerror}") from None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def _apply_signer_env(doc: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Overlay SIGNER_<SECTION>__<KEY> variables onto the signer config; returns names used."""
    used = []
    for name, value in env.items():
        if not name.startswith(SIGNER_ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(SIGNER_ENV_PREFIX) :].split("__")]
        node = doc
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = _parse_env_value(value)
            used.append(name)
    return used


def _parse_env_value(value: str) -> Any:
    # The signer's config crate parses lists from comma-separated env values.
    if "," in value and not value.startswith(("postgres", "http")):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value]


def signer_layer(
    config_path: Path | None, env_file: Path | None, environ: Mapping[str, str]
) -> dict[str, Any]:
    """sbtc-ops settings derived from the signer's config (+ its env conventions)."""
    doc: dict[str, Any] = read_toml(config_path) if config_path else {}
    env: dict[str, str] = {}
    if env_file:
        env.update(read_env_file(env_file))
    env.update({k: v for k, v in environ.items() if k.startswith(SIGNER_ENV_PREFIX)})
    used_env = _apply_signer_env(doc, env)
    if not doc:
        return {}
    signer = doc.get("signer", {}) or {}
    layer: dict[str, Any] = {"signer": {}}
    out = layer["signer"]
    if config_path:
        out["config_path"] = str(config_path)
    if env_file:
        out["env_file"] = str(env_file)
    if signer.get("db_endpoint"):
        out["db_endpoint"] = signer["db_endpoint"]
    if signer.get("private_key"):
        out["private_key"] = signer["private_key"]
        env_name = "SIGNER_SIGNER__PRIVATE_KEY"
        if env_name in used_env:
            where = (
                f"env file {env_file}"
                if env_file and env_name in read_env_file(env_file)
                else "environment"
            )
            out["private_key_source"] = f"{env_name} ({where})"
        else:
            out["private_key_source"] = f"{config_path} [signer] private_key"
    for key in ("bootstrap_signing_set",):
        if key in signer:
            out[key] = _as_list(signer[key])
    if signer.get("prometheus_exporter_endpoint"):
        out["prometheus_exporter_endpoint"] = str(signer["prometheus_exporter_endpoint"])
    p2p = signer.get("p2p", {}) or {}
    if p2p.get("listen_on"):
        out["listen_on"] = _as_list(p2p["listen_on"])
    observer = signer.get("event_observer", {}) or {}
    if observer.get("bind"):
        out["event_observer_bind"] = str(observer["bind"])
    bitcoin = doc.get("bitcoin", {}) or {}
    if bitcoin.get("rpc_endpoints"):
        out["bitcoin_rpc_endpoints"] = _as_list(bitcoin["rpc_endpoints"])
    if signer.get("network"):
        network = _SIGNER_NETWORKS.get(str(signer["network"]))
        if network is None:
            where = str(config_path) if config_path else "SIGNER_SIGNER__NETWORK"
            raise ConfigError(
                f"{where}: signer.network = {signer['network']!r} is not one of "
                "mainnet, testnet, regtest"
            )
        layer["network"] = network
    if signer.get("deployer"):
        layer["deployer"] = str(signer["deployer"])
    stacks = doc.get("stacks", {}) or {}
    if stacks.get("endpoints"):
        layer["stacks"] = {"endpoints": _as_list(stacks["endpoints"])}
    return layer


# -- loading -----------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """SBTC_OPS_SECTION__KEY=value → nested dict (lists as JSON or comma-separated)."""
    import json

    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "SBTC_OPS_CONFIG":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
        parsed: Any = value
        if value.startswith(("[", "{")):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value
        node[path[-1]] = parsed
    return layer


def _prune_none(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = _prune_none(value)
            if nested:
                out[key] = nested
        elif value is not None and value != [] and value != ():
            out[key] = value
    return out


def _locate(path: tuple[Any, ...], layers: list[tuple[str, dict[str, Any]]]) -> str:
    """Name the layer (file, env var, flag) a bad key came from, for the error message."""
    for layer_name, layer in reversed(layers):
        node: Any = layer
        for part in path:
            if (isinstance(node, Mapping) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node)
            ):
                node = node[part]
            else:
                break
        else:
            return str(layer_name)
    return "settings"


def load_settings(
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings; raises ConfigError naming file, key and problem."""
    environ = os.environ if environ is None else environ
    file_path = find_config_file(config_path, environ)
    file_doc = read_toml(file_path) if file_path else {}
    env_doc = _env_layer(environ)
    flag_doc = _prune_none(overrides or {})

    # The signer config's location can be set in any layer above it.
    pre = deep_merge(deep_merge(file_doc, env_doc), flag_doc)
    signer_pre = pre.get("signer", {}) if isinstance(pre.get("signer"), dict) else {}
    signer_cfg = signer_pre.get("config_path")
    signer_env = signer_pre.get("env_file")
    discovered_doc, discovered_from = _discovered_layer(file_path, pre, environ)
    pre = deep_merge(discovered_doc, pre)
    signer_pre = pre.get("signer", {}) if isinstance(pre.get("signer"), dict) else {}
    signer_cfg = signer_pre.get("config_path")
    compose_env = _compose_signer_env(pre)
    signer_doc = signer_layer(
        Path(signer_cfg) if signer_cfg else None,
        Path(signer_env) if signer_env else None,
        {**compose_env, **environ},
    )
    _name_compose_key_source(signer_doc, compose_env, environ, pre)
    layers = [
        ("discovered deployment", discovered_doc),
        ("the signer's configuration", signer_doc),
        (str(file_path) if file_path else "sbtc-ops.toml", file_doc),
        ("environment (SBTC_OPS_*)", env_doc),
        ("command line", flag_doc),
    ]
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    try:
        # Everything is passed as init values so the precedence above is the only one.
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, layers)) from None
    if file_path:
        settings.source_files.append(str(file_path))
    settings.discovered_from = discovered_from
    return settings


def _discovered_layer(
    file_path: Path | None, pre: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], str | None]:
    """With no sbtc-ops.toml and no signer configuration anywhere, find the deployment the
    way `sbtc-ops init` does (current directory, running containers, standard paths)."""
    signer = pre.get("signer") if isinstance(pre.get("signer"), dict) else {}
    docker = pre.get("docker") if isinstance(pre.get("docker"), dict) else {}
    if file_path or (signer or {}).get("config_path") or (docker or {}).get("compose_dir"):
        return {}, None
    if (pre.get("db") or {}).get("url") or environ.get("SBTC_OPS_NO_DISCOVERY"):
        return {}, None
    from sbtc_ops.discover import discover

    try:
        found = discover(environ=environ)
    except (SbtcOpsError, OSError):  # discovery is a convenience; a failure is "not found"
        return {}, None
    if not found.found:
        return {}, None
    return found.settings_layer(), str(found.value("compose.dir"))


def _name_compose_key_source(
    signer_doc: dict[str, Any],
    compose_env: Mapping[str, str],
    environ: Mapping[str, str],
    pre: dict[str, Any],
) -> None:
    """A private key compose passes to the signer is reported as coming from there."""
    name = "SIGNER_SIGNER__PRIVATE_KEY"
    signer = signer_doc.get("signer") or {}
    source = str(signer.get("private_key_source") or "")
    if name in compose_env and name not in environ and source.endswith("(environment)"):
        directory = (pre.get("docker") or {}).get("compose_dir")
        signer["private_key_source"] = f"{name} (compose project {directory})"


def _compose_signer_env(pre: dict[str, Any]) -> dict[str, str]:
    """The SIGNER_* variables compose gives the signer container, when docker.compose_dir is
    set: the secrets stay in the deployment's .env, sbtc-ops.toml only points at it."""
    docker = pre.get("docker") if isinstance(pre.get("docker"), dict) else None
    if not docker or not docker.get("compose_dir"):
        return {}
    from sbtc_ops.discover.compose import find_compose_files, signer_environment

    directory = Path(str(docker["compose_dir"]))
    files = [Path(str(f)) for f in docker.get("compose_files") or []]
    files = files or find_compose_files(directory)
    if not files:
        raise ConfigError(f"docker.compose_dir {directory}: no compose file in it")
    return signer_environment(directory, files, str(docker.get("signer_service") or "sbtc-signer"))


def _describe_validation_error(
    exc: ValidationError, layers: list[tuple[str, dict[str, Any]]]
) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        location = tuple(error["loc"])
        key = ".".join(str(part) for part in location)
        origin = _locate(location, layers)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"  {origin}: {key}: {message}")
    return "\n".join(lines)


# -- showing -----------------------------------------------------------------------------

REDACTED = "**********"


def redact_url(url: str) -> str:
    """Replace the password (and any query secret) in a URL; keep the rest readable."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if ":" in host and not host.startswith("[") and host.count(":") > 1:
        host = f"[{host}]"
    netloc = f"{user}:{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _show_value(value: Any) -> Any:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return _show_secret_url(secret) if "://" in secret else REDACTED
    if isinstance(value, BaseModel):
        return {name: _show_value(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {k: (REDACTED if _looks_secret(k) else _show_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_show_value(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def _show_secret_url(url: str) -> str:
    """A secret URL without a password carries its credential in the path or query (webhook
    tokens): show only where it points."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is not None or not (parts.path.strip("/") or parts.query):
        return redact_url(url)
    return f"{parts.scheme}://{parts.netloc}/{REDACTED}"


def _looks_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in ("password", "secret", "token", "private", "api_key"))


def redacted_view(settings: Settings) -> dict[str, Any]:
    """The effective configuration with every secret redacted, presets applied."""
    shown = {
        name: _show_value(getattr(settings, name))
        for name in Settings.model_fields
        if name != "source_files"
    }
    shown["effective"] = {
        "deployer": settings.effective_deployer,
        "stacks_endpoints": settings.effective_stacks_endpoints,
        "db_url": _show_value(settings.effective_db_url),
    }
    shown["config_files"] = list(settings.source_files)
    return shown
