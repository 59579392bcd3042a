"""sbtc-ops' settings: the model, its own layers (sbtc-ops.toml, SBTC_OPS_* variables, the
command's flags), renamed and removed keys, and how layers are merged and validated.

Loading the effective settings also reads the signer's configuration (host.signer_import) and
its compose project: sbtc_ops.discover.load does it, and lists the layers in precedence order.
The file is found via --config, $SBTC_OPS_CONFIG, ./sbtc-ops.toml, /etc/sbtc-ops/sbtc-ops.toml.
Every secret is a SecretStr (or a URL whose password is redacted when shown). Nothing here
reads anything but sbtc-ops.toml: no Docker, no signer files.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from sbtc_ops import redact
from sbtc_ops.errors import ConfigError
from sbtc_ops.redact import REDACTED, redact_url
from sbtc_ops.statedir import default_state_dir

Network = Literal["mainnet", "testnet", "devnet"]

DEFAULT_CONFIG_PATHS = (Path("sbtc-ops.toml"), Path("/etc/sbtc-ops/sbtc-ops.toml"))
ENV_PREFIX = "SBTC_OPS_"
CONFIG_VARIABLE = "SBTC_OPS_CONFIG"
# Turns off discovery of the deployment when no configuration is found (docs/configuration.md).
NO_DISCOVERY_VARIABLE = "SBTC_OPS_NO_DISCOVERY"
# The user namespace root prepared for the restore drill's sandbox user (pg/sandboxuser.py);
# set by the shipped systemd unit and compose service, not by operators.
SANDBOX_USERNS_VARIABLE = "SBTC_OPS_SANDBOX_USERNS"
# SBTC_OPS_* variables that are not settings.
NOT_SETTINGS = frozenset({CONFIG_VARIABLE, NO_DISCOVERY_VARIABLE, SANDBOX_USERNS_VARIABLE})
# Marks a setting whose default depends on the host (not written as a value by `config sample`).
COMPUTED_DEFAULT: dict[str, Any] = {"computed_default": True}


def is_computed_default(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("computed_default") is True


@dataclass(frozen=True)
class ConfigProblem:
    """One bad setting: the layer it came from (a file, an environment variable, the signer's
    configuration, the command line), its dotted key ("" for the whole file) and what is wrong."""

    layer: str
    key: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.layer}: {self.key}: {self.message}"
            if self.key
            else f"{self.layer}: {self.message}"
        )

    def to_json(self) -> dict[str, str]:
        return {"layer": self.layer, "key": self.key, "message": self.message}


class InvalidConfig(ConfigError):
    """The configuration could be read but is wrong. Commands exit 2 as for any ConfigError;
    `config check` reports the problems and exits 1 (a file it cannot read stays exit 2)."""

    def __init__(self, message: str, problems: list[ConfigProblem]) -> None:
        super().__init__(message)
        self.problems = problems


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
        description="Stacks node RPC endpoints to read the registry from (own node and a public "
        "API); they must agree. Default: the network preset's public API.",
        examples=[["http://stacks-node:20443", "https://api.hiro.so"]],
    )
    api_key: SecretStr | None = Field(
        None, description="x-api-key header for hosted APIs.", examples=["<hiro api key>"]
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Seconds to wait for a TCP/TLS connection.", examples=[3.0]
    )
    timeout_s: float = Field(
        15.0, gt=0, description="Seconds to wait for one whole request.", examples=[30.0]
    )
    retries: int = Field(
        3, ge=0, le=10, description="Retries after a 429 or 5xx answer (0-10).", examples=[5]
    )
    api_key_hosts: list[str] | None = Field(
        None,
        description="Hosts (HOST or HOST:PORT) that get stacks.api_key, over https only. "
        "Default: the network preset's public API (api.hiro.so, api.testnet.hiro.so).",
        examples=[["api.hiro.so"]],
    )
    max_retry_wait_s: float = Field(
        30.0,
        ge=0,
        description="Longest wait before a retry, even if Retry-After asks for more.",
        examples=[10.0],
    )


class DatabaseSettings(_Section):
    url: SecretStr | None = Field(
        None,
        description="The signer database (libpq URL). Default: the signer's db_endpoint.",
        examples=["postgresql://signer:<password>@127.0.0.1:5432/signer"],
    )


class S3Settings(_Section):
    url: str | None = Field(
        None,
        description="Bucket and prefix for backups: s3://bucket/prefix.",
        examples=["s3://my-bucket/signer-1"],
    )
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint; default: AWS.",
        examples=["https://s3.example.com"],
    )
    region: str | None = Field(None, description="Bucket region.", examples=["eu-central-1"])
    access_key_id: str | None = Field(
        None,
        description="Access key id; default: the AWS credential chain (env, profile, role).",
        examples=["AKIAEXAMPLE"],
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Secret access key (with access_key_id).", examples=["<secret>"]
    )
    timeout_s: float = Field(
        60.0,
        gt=0,
        description="Wall-clock deadline, in seconds, of each S3 operation (checking the "
        "bucket, a listing, a manifest read, a delete), retries included. A location that "
        "misses it is reported unreachable for the rest of the run; the others go on.",
        examples=[30.0],
    )
    min_transfer_mib_s: float = Field(
        1.0,
        gt=0,
        description="Slowest transfer accepted, in MiB/s: an upload or download gets "
        "timeout_s plus its size at this rate as its deadline (a 10 GiB backup at 1 MiB/s: "
        "about 3 hours), then it is abandoned and the location reported as failed.",
        examples=[10.0],
    )


class RetentionSettings(_Section):
    keep_daily: int = Field(
        7, ge=0, description="Keep the newest backup of each of this many days.", examples=[14]
    )
    keep_weekly: int = Field(
        4, ge=0, description="Keep the newest backup of each of this many weeks.", examples=[8]
    )
    keep_monthly: int = Field(
        12, ge=0, description="Keep the newest backup of each of this many months.", examples=[24]
    )


class BackupSettings(_Section):
    local_dir: Path | None = Field(
        None, description="Local backup repository directory.", examples=["/var/backups/sbtc-ops"]
    )
    s3: S3Settings = Field(
        default_factory=S3Settings, description="A copy of every backup in S3-compatible storage."
    )
    format: Literal["custom", "directory"] = Field(
        "custom",
        description="pg_dump format: custom (one file) or directory (parallel dump with jobs).",
        examples=["directory"],
    )
    compression: str = Field(
        "gzip:1",
        description="pg_dump --compress value; gzip:1 is ~3x faster than pg_dump's default "
        "and within ~7% of its size. zstd/lz4 only if your pg_dump build supports them.",
        examples=["zstd:3"],
    )
    jobs: int = Field(
        2, ge=1, le=64, description="Parallel dump jobs (directory format only).", examples=[4]
    )
    recipients: list[str] = Field(
        default_factory=list,
        description="age X25519 recipients (age1…) to encrypt backups to.",
        examples=[["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]],
    )
    identity_file: Path | None = Field(
        None,
        description="age identity file, needed only by verify and restore.",
        examples=["/root/sbtc-ops-backup.agekey"],
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings,
        description="What `prune` keeps (daily/weekly/monthly; the newest backup always stays).",
    )
    max_expanded_mb: int | None = Field(
        None,
        ge=1,
        description="Cap on what a compressed dump may expand to during verify/restore "
        "(decompression bombs); default 100x its size as staged, at least 64 MiB. One "
        "gzip/zstd layer at most.",
        examples=[4096],
    )

    @field_validator("recipients")
    @classmethod
    def _age_recipients(cls, value: list[str]) -> list[str]:
        for recipient in value:
            if not recipient.startswith("age1"):
                raise ValueError(f"{recipient!r} is not an age X25519 recipient (age1…)")
        return value


class PostgresSettings(_Section):
    bin_dir: Path | None = Field(
        None,
        description="Directory with initdb/pg_ctl/pg_dump/pg_restore. Default: embedded.",
        examples=["/usr/lib/postgresql/18/bin"],
    )
    run_as: str | None = Field(
        None,
        description="Unprivileged user that runs throwaway servers when invoked as root. "
        "Default: a `sbtc-ops` user if one exists, else nobody.",
        examples=["sbtc-ops"],
    )


class SignerSettings(_Section):
    """What sbtc-ops knows of the signer, mostly imported from its own config."""

    config_path: Path | None = Field(
        None,
        description="The signer's signer-config.toml; the settings below are read from it.",
        examples=["/opt/signer/signer-config.toml"],
    )
    env_file: Path | None = Field(
        None,
        description="An env file with SIGNER_* variables (.env), as docker compose uses.",
        examples=["/opt/signer/.env"],
    )
    db_endpoint: SecretStr | None = Field(
        None,
        description="The signer's [signer] db_endpoint (usually imported, not set here).",
        examples=["postgresql://signer:<password>@postgres:5432/signer"],
    )
    private_key: SecretStr | None = Field(
        None,
        description="The signer's private key (usually imported; prefer key_file).",
        examples=["<64 hex digits>"],
    )
    key_file: Path | None = Field(
        None,
        description="A file holding the signer's private key.",
        examples=["/etc/sbtc-signer/private.key"],
    )
    public_key: str | None = Field(
        None,
        description="The signer's compressed public key (hex).",
        examples=["02" + "ab" * 32],
    )
    bootstrap_signing_set: list[str] = Field(
        default_factory=list,
        description="Public keys of the bootstrap signer set (usually imported).",
        examples=[["02" + "ab" * 32, "03" + "cd" * 32]],
    )
    prometheus_exporter_endpoint: str | None = Field(
        None,
        description="HOST:PORT of the signer's Prometheus exporter (usually imported).",
        examples=["0.0.0.0:9184"],
    )
    listen_on: list[str] = Field(
        default_factory=list,
        description="The signer's P2P listen addresses, [signer.p2p] listen_on (usually imported).",
        examples=[["tcp://0.0.0.0:4122", "quic-v1://0.0.0.0:4122"]],
    )
    event_observer_bind: str | None = Field(
        None,
        description="The signer's event observer, [signer.event_observer] bind (usually imported).",
        examples=["0.0.0.0:8801"],
    )
    bitcoin_rpc_endpoints: list[SecretStr] = Field(
        default_factory=list,
        description="The signer's [bitcoin] rpc_endpoints (usually imported).",
        examples=[["http://user:<password>@bitcoind:8332"]],
    )
    # Where the imported private key was found (signer-config.toml or a SIGNER_* variable):
    # reported by `key check` and the audit, set by loading, never read from a layer.
    _private_key_source: str | None = PrivateAttr(None)

    @property
    def private_key_source(self) -> str | None:
        return self._private_key_source

    def record_key_source(self, source: str | None) -> None:
        self._private_key_source = source


class AttestSettings(_Section):
    """Signed evidence of restore drills (docs/attestations.md)."""

    signing_key: Path | None = Field(
        None,
        description="SSH key that signs every drill's attestation (a private key file such as a "
        "dedicated ed25519 key for unattended `serve`, or the .pub of a key held by ssh-agent or "
        "a FIDO token). Unset: attestations are written unsigned and say so.",
        examples=["/etc/sbtc-ops/attest_ed25519"],
    )
    allowed_signers: Path | None = Field(
        None,
        description="OpenSSH allowed-signers file naming who may sign attestations; with it, "
        "`backups`, the status page, metrics and the audit count only drills whose attestation "
        "a listed key signed.",
        examples=["/etc/sbtc-ops/allowed_signers"],
    )


class AuditSettings(_Section):
    """Options of `sbtc-ops audit`."""

    signer_version: str | None = Field(
        None,
        description="The signer release running here (e.g. 1.3.3), when neither the image tag "
        "nor its labels nor /info say it; the signer-config checks judge keys against it.",
        examples=["1.3.3"],
    )
    db_data_path: Path | None = Field(
        None,
        description="The PostgreSQL data directory on this host, when compose does not say "
        "(a bind mount of the postgres service): DB-004 judges the free space of its volume.",
        examples=["/opt/sbtc/postgres/data"],
    )
    secrets_inventory: Path | None = Field(
        None,
        description="secrets.toml: name, location, owner, last_rotated, max_age_days.",
        examples=["/etc/sbtc-ops/secrets.toml"],
    )
    roster_file: Path | None = Field(
        None, description="Administrator roster (TOML).", examples=["/etc/sbtc-ops/roster.toml"]
    )
    runbooks: list[Path] = Field(
        default_factory=list,
        description="Runbooks, each with a 'Last reviewed: YYYY-MM-DD' line.",
        examples=[["/etc/sbtc-ops/runbooks/restore.md"]],
    )
    allowed_ports: list[str] = Field(
        default_factory=list,
        description="Extra inbound ports allowed by policy, e.g. '8333', '20444/tcp', '4122/udp'.",
        examples=[["8333", "4122/udp"]],
    )
    allow_node_p2p: bool = Field(
        False,
        description="Also allow Bitcoin P2P 8333 and Stacks P2P 20444 inbound.",
        examples=[True],
    )
    ssh_users: list[str] = Field(
        default_factory=list,
        description="Administrators to evaluate sshd Match blocks for (sshd -T -C user=…).",
        examples=[["alice", "bob"]],
    )
    pg_hba_files: list[Path] = Field(
        default_factory=list,
        description="pg_hba.conf files besides /etc/postgresql/*/main and compose volumes.",
        examples=[["/srv/postgres/pg_hba.conf"]],
    )
    rotation_warn_days: int = Field(
        14, ge=0, description="Warn this many days before a secret is due.", examples=[30]
    )
    concurrency: int = Field(
        8, ge=1, le=64, description="Checks run at the same time.", examples=[4]
    )
    check_timeout_s: float = Field(
        15.0, gt=0, description="A check still running after this is an error.", examples=[30.0]
    )
    command_timeout_s: float = Field(
        5.0, gt=0, description="Per command a check runs (sshd -T, nft …).", examples=[10.0]
    )
    # -- logs, monitoring, nodes, releases, operations (audit II) --
    network_timeout_s: float = Field(
        5.0, gt=0, description="Per HTTP/RPC request.", examples=[10.0]
    )
    log_retention_days: int = Field(
        90, ge=1, description="Logs must reach back this many days.", examples=[180]
    )
    log_files: list[str] = Field(
        default_factory=list,
        description="Globs of the signer's and nodes' local log files.",
        examples=[["/var/log/bitcoin/debug.log*"]],
    )
    journald_conf_paths: list[Path] = Field(
        default_factory=lambda: [
            Path("/usr/lib/systemd/journald.conf.d"),
            Path("/etc/systemd/journald.conf"),
            Path("/etc/systemd/journald.conf.d"),
            Path("/run/systemd/journald.conf.d"),
        ],
        description="journald configuration, read in this order (later wins; *.d = drop-ins).",
        examples=[["/etc/systemd/journald.conf"]],
    )
    logrotate_paths: list[Path] = Field(
        default_factory=lambda: [Path("/etc/logrotate.conf"), Path("/etc/logrotate.d")],
        description="logrotate configuration files and directories.",
        examples=[["/etc/logrotate.conf", "/etc/logrotate.d"]],
    )
    docker_daemon_json: Path = Field(
        Path("/etc/docker/daemon.json"),
        description="Docker daemon configuration (default log driver).",
        examples=["/etc/docker/daemon.json"],
    )
    metrics_url: str | None = Field(
        None,
        description="Default: http://127.0.0.1:<port of prometheus_exporter_endpoint>/metrics",
        examples=["http://127.0.0.1:9184/metrics"],
    )
    metrics_interval_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Between two scrapes when no previous audit's is usable.",
        examples=[2.0],
    )
    signer_info_url: str | None = Field(
        None,
        description="Default: http://127.0.0.1:<port of event_observer.bind>/info",
        examples=["http://127.0.0.1:8801/info"],
    )
    tip_tolerance_blocks: int = Field(
        2, ge=0, description="How far a node's tip may trail the reference.", examples=[3]
    )
    bitcoin_rpc_url: SecretStr | None = Field(
        None,
        description="Default: the signer's first bitcoin.rpc_endpoints entry.",
        examples=["http://user:<password>@127.0.0.1:8332"],
    )
    stacks_node_url: str | None = Field(
        None, description="Default: first stacks.endpoints.", examples=["http://127.0.0.1:20443"]
    )
    stacks_node_config: Path | None = Field(
        None,
        description="The Stacks node's Config.toml.",
        examples=["/opt/sbtc/nodes/stacks/Config.toml"],
    )
    chainstate_paths: list[Path] = Field(
        default_factory=list,
        description="Bitcoin datadir, Stacks working_dir, PostgreSQL data.",
        examples=[["/srv/bitcoin", "/srv/stacks", "/srv/postgres"]],
    )
    github_api_url: str = Field(
        "https://api.github.com",
        description="GitHub API for the latest releases.",
        examples=["https://github.example.com/api/v3"],
    )
    github_token: SecretStr | None = Field(
        None,
        description="Raises GitHub's rate limit (60 requests/hour without).",
        examples=["<github token>"],
    )
    release_cache_ttl_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="How long fetched releases are reused from the state directory.",
        examples=[3600.0],
    )
    release_grace_days: int = Field(
        14,
        ge=0,
        description="Days a newer release may be out before running an older one fails.",
        examples=[7],
    )
    osv_api_url: str = Field(
        "https://api.osv.dev",
        description="OSV vulnerability database API.",
        examples=["https://api.osv.dev"],
    )
    osv_python: bool = Field(
        True, description="Also query sbtc-ops' own Python dependencies.", examples=[False]
    )
    dpkg_status: Path = Field(
        Path("/var/lib/dpkg/status"),
        description="dpkg status file listing the host's packages.",
        examples=["/var/lib/dpkg/status"],
    )
    runbook_max_age_days: int = Field(
        180, ge=1, description="A runbook must have been reviewed within this.", examples=[90]
    )
    coverage_min_percent: float = Field(
        70.0,
        ge=0,
        le=100,
        description="Share of the week's hours at least one administrator covers.",
        examples=[100.0],
    )


class DockerSettings(_Section):
    """The signer's docker compose deployment (written by `sbtc-ops init`)."""

    compose_dir: Path | None = Field(
        None, description="The compose project directory.", examples=["/opt/sbtc"]
    )
    compose_files: list[Path] = Field(
        default_factory=list,
        description="Its compose files, absolute or relative to compose_dir (default: the "
        "standard names found in compose_dir). The audit reads these.",
        examples=[["docker-compose.yml", "nodes/docker-compose.chains.yml"]],
    )
    signer_service: str = Field(
        "sbtc-signer", description="The signer's compose service.", examples=["signer"]
    )
    db_service: str | None = Field(
        None, description="The PostgreSQL compose service of the signer.", examples=["postgres"]
    )
    db_container: str | None = Field(
        None,
        description="Back up through `docker exec` into this container (pg_dump inside).",
        examples=["sbtc-signer-postgres-1"],
    )

    def compose_paths(self) -> list[Path]:
        """compose_files, a relative one taken from compose_dir (as compose does)."""
        base = self.compose_dir
        return [f if f.is_absolute() or base is None else base / f for f in self.compose_files]


class ServeSettings(_Section):
    """`sbtc-ops serve`: schedules (5-field cron, local time; "" disables a job), HTTP, alerts."""

    bind: str = Field(
        "127.0.0.1:9185",
        description="HOST:PORT for /metrics and the status page.",
        examples=["0.0.0.0:9185"],
    )
    max_connections: int = Field(
        64,
        ge=1,
        le=4096,
        description="Open HTTP connections at most; the longest idle goes.",
        examples=[128],
    )
    idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="An HTTP connection idle (or sending its request) this long is closed.",
        examples=[10.0],
    )
    webhooks: list[SecretStr] = Field(
        default_factory=list,
        description="Webhook URLs notified on failure and recovery (Slack and Discord URLs get "
        "their own body shape; anything else generic JSON).",
        examples=[["https://hooks.slack.com/services/<token>"]],
    )
    dkg_poll_interval_s: float = Field(
        60.0, gt=0, description="How often the DKG watch polls the signer DB.", examples=[30.0]
    )
    dkg_watch: bool = Field(
        True, description="Back up new DKG shares as soon as they appear.", examples=[False]
    )
    backup_cron: str = Field(
        "17 3 * * *", description="When to take a backup.", examples=["17 */6 * * *"]
    )
    verify_after_backup: bool = Field(
        True, description="Verify each new backup right after it is taken.", examples=[False]
    )
    verify_rotate_cron: str = Field(
        "41 4 * * 0",
        description="Weekly verify of an older retained backup, in rotation.",
        examples=[""],
    )
    audit_cron: str = Field(
        "7 * * * *", description="When to audit the host.", examples=["7 6 * * *"]
    )
    chain_check_cron: str = Field(
        "*/10 * * * *",
        description="When to compare the newest backup's key with the chain.",
        examples=["*/30 * * * *"],
    )
    jitter_s: float = Field(
        120.0, ge=0, description="Random delay added to each scheduled run.", examples=[0.0]
    )
    prune_after_backup: bool = Field(
        True, description="Apply backup.retention after a backup.", examples=[False]
    )
    job_timeout_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="A run is stopped after this; verify runs after verify.deadline_max_s plus "
        "15 minutes instead (each drill ends itself at its own deadline).",
        examples=[3600.0],
    )
    history_days: int = Field(
        400, ge=7, description="How long job runs are kept in state.db.", examples=[90]
    )
    signer_check_cron: str = Field(
        "*/5 * * * *",
        description="DKG state, DB size and growth, event lag, and a backup when the signer's "
        "image or build revision changes.",
        examples=["*/15 * * * *"],
    )

    @field_validator(
        "backup_cron", "verify_rotate_cron", "audit_cron", "chain_check_cron", "signer_check_cron"
    )
    @classmethod
    def _cron(cls, value: str) -> str:
        if value.strip() and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a 5-field cron expression")
        return value.strip()


class KeySettings(_Section):
    """Key custody: `sbtc-ops key check|backup|verify-backup`."""

    backup_max_age_days: float = Field(
        90.0,
        gt=0,
        description="Warn when the last verified cold backup is older than this.",
        examples=[30.0],
    )
    expected_owner: str | None = Field(
        None,
        description="User that must own files holding the key (default: root or you).",
        examples=["sbtc-signer"],
    )


class VerifySettings(_Section):
    """Budgets of the restore drill (`verify`): what a hostile archive may make it consume.
    Defaults fit a 50 GB signer database; docs/threat-model.md says how each is enforced."""

    disk_factor: float = Field(
        20.0,
        gt=0,
        description="Disk budget of a drill (restored data directory + staging) as a multiple "
        "of the archive's size (the manifest's recorded size, or a foreign dump's size).",
        examples=[40.0],
    )
    disk_min_mb: int = Field(
        512,
        ge=64,
        description="The disk budget is at least this (a fresh cluster alone takes ~60 MiB).",
        examples=[2048],
    )
    disk_max_mb: int | None = Field(
        None,
        ge=64,
        description="The disk budget is at most this. Default: no cap but the free space.",
        examples=[262144],
    )
    disk_reserve_mb: int = Field(
        2048,
        ge=0,
        description="Free space the drill always leaves on the volumes it writes to (the "
        "signer's own PostgreSQL may share them).",
        examples=[8192],
    )
    memory_mb: int = Field(
        4096,
        ge=256,
        description="Memory of the sandbox: its cgroup's limit, and each sandboxed process's "
        "address space.",
        examples=[8192],
    )
    max_processes: int = Field(
        512,
        ge=32,
        description="Processes the sandbox may run at once (cgroup pids.max; without a pids "
        "cgroup, RLIMIT_NPROC above what the sandbox user already runs).",
        examples=[256],
    )
    deadline_min_s: float = Field(
        900.0,
        gt=0,
        description="The drill's deadline is at least this many seconds.",
        examples=[1800.0],
    )
    deadline_s_per_gb: float = Field(
        1800.0,
        ge=0,
        description="Seconds added to the drill's deadline per GB of archive.",
        examples=[3600.0],
    )
    deadline_max_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="The drill's deadline is at most this; serve's verify jobs are stopped "
        "a grace period after it.",
        examples=[12 * 3600.0],
    )
    query_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="statement_timeout of the drill's own reading session (set when it "
        "connects), never beyond the deadline.",
        examples=[600.0],
    )
    jobs: int = Field(
        2,
        ge=1,
        le=64,
        description="Parallel restore jobs (pg_restore --jobs) of a drill: `verify` (its --jobs "
        "overrides it), serve's scheduled verifies, `upgrade-check`. Two leave the signer's "
        "host its other cores.",
        examples=[4],
    )


class Settings(BaseModel):
    """The effective settings. Layers are merged by load_settings (not by pydantic), so the
    documented precedence is the only one and every bad key can be traced to its layer."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    network: Network = Field(
        "mainnet",
        description="mainnet, testnet or devnet; selects the presets.",
        examples=["testnet"],
    )
    deployer: str | None = Field(
        None,
        description="sbtc-registry deployer; default per network.",
        examples=["SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"],
    )
    state_dir: Path = Field(
        default_factory=lambda: _default_state_dir(),
        description="sbtc-ops' own state (state.db, locks, caches), one per host: the service "
        "and the administrator must share it. Default: $STATE_DIRECTORY (set by systemd's "
        "StateDirectory=), else /var/lib/sbtc-ops for root and any user who may write there, "
        "else $XDG_STATE_HOME/sbtc-ops.",
        examples=["/var/lib/sbtc-ops"],
        json_schema_extra=COMPUTED_DEFAULT,
    )
    stacks: StacksSettings = Field(
        default_factory=StacksSettings, description="Reading the sbtc-registry from Stacks nodes."
    )
    db: DatabaseSettings = Field(
        default_factory=DatabaseSettings, description="The signer database to back up."
    )
    backup: BackupSettings = Field(
        default_factory=BackupSettings,
        description="`backup`, `prune`, `restore`: where backups go and how they are made.",
    )
    postgres: PostgresSettings = Field(
        default_factory=PostgresSettings,
        description="PostgreSQL binaries and the throwaway servers of verify and restore.",
    )
    signer: SignerSettings = Field(
        default_factory=lambda: SignerSettings(),
        description="The signer: where its configuration is; values imported from it.",
    )
    serve: ServeSettings = Field(
        default_factory=lambda: ServeSettings(),
        description='`serve`: schedules (5-field cron, local time; "" disables a job), HTTP, '
        "alerts.",
    )
    audit: AuditSettings = Field(
        default_factory=lambda: AuditSettings(), description="`audit`: what the host audit reads."
    )
    docker: DockerSettings = Field(
        default_factory=lambda: DockerSettings(),
        description="The docker compose deployment sbtc-ops found or was pointed at (`init`).",
    )
    key: KeySettings = Field(default_factory=KeySettings, description="Key custody options.")
    verify: VerifySettings = Field(
        default_factory=VerifySettings,
        description="`verify`: the drill's budgets (disk, memory, processes, time).",
    )
    attest: AttestSettings = Field(
        default_factory=AttestSettings,
        description="Drill attestations: the signing key and who may sign.",
    )

    # Not settings (no layer can set them): the sbtc-ops.toml read, for messages, and the
    # deprecated keys read (MIGRATIONS), one message each, said on stderr by loading.
    _source_files: list[str] = PrivateAttr(default_factory=list)
    _deprecations: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _migrate(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Deprecated keys given straight to the model (loading migrates each layer first,
        to keep the precedence and name the layer)."""
        notes: list[str] = []
        if isinstance(data, dict):
            data, notes = migrate_layer("settings", data)
        settings = handler(data)
        settings._deprecations.extend(notes)
        return settings

    @property
    def deprecations(self) -> list[str]:
        return self._deprecations

    @property
    def source_files(self) -> list[str]:
        return self._source_files

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

    @property
    def effective_api_key_hosts(self) -> list[str]:
        """Where stacks.api_key may go: the configured hosts, else the preset's https API."""
        if self.stacks.api_key_hosts is not None:
            return [host.strip().lower() for host in self.stacks.api_key_hosts if host.strip()]
        return [
            (urlsplit(url).hostname or "").lower()
            for url in self.preset.stacks_endpoints
            if url.startswith("https://")
        ]


# -- where sbtc-ops' own settings are ------------------------------------------------------


def _default_state_dir() -> Path:
    return default_state_dir()


def find_config_file(
    explicit: Path | None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The sbtc-ops.toml to use: --config / $SBTC_OPS_CONFIG must exist; defaults may not."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist or is not a file")
        return explicit
    env = environ.get(CONFIG_VARIABLE)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"config file {path} (from ${CONFIG_VARIABLE}) does not exist")
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
        problem = ConfigProblem(str(path), "", f"not valid TOML: {exc}")
        raise InvalidConfig(str(problem), [problem]) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


# -- settings that were renamed or removed --------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """A key that is no longer a setting. `honoured`: read (as `new`, or ignored when there is
    no new key) with a deprecation warning; otherwise it is an error naming `new`."""

    old: str
    new: str | None
    honoured: bool
    why: str


MIGRATIONS = (
    Migration(
        "audit.compose_files",
        "docker.compose_files",
        honoured=True,
        why="one list of compose files for every command",
    ),
    Migration(
        "audit.key_backup_max_age_days",
        "key.backup_max_age_days",
        honoured=False,
        why="one age limit for `key check` and the audit; its default is 90 days, not 365",
    ),
    Migration(
        "serve.verify_jobs",
        "verify.jobs",
        honoured=True,
        why="one number of restore jobs for every drill",
    ),
    Migration(
        "signer.private_key_source",
        None,
        honoured=True,
        why="where the key was found is worked out at every run and reported, not set",
    ),
)
MIGRATIONS_DOC = "docs/configuration.md, Migrating settings"


def migrate_layer(layer: str, doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`doc` with each honoured deprecated key moved to its new one (a new key also set in
    the same layer wins); one warning per key found. Removed keys stay, for validation to
    reject with `removed_message`."""
    out = _copy_tables(doc)
    notes = []
    for migration in MIGRATIONS:
        table, name = _table_of(out, migration.old)
        if not migration.honoured or table is None or name not in table:
            continue
        value = table.pop(name)
        note = f"{layer}: {migration.old} is deprecated ({migration.why})"
        if migration.new is None:
            notes.append(f"{note}; it is ignored: remove it ({MIGRATIONS_DOC})")
            continue
        new_table, new_name = _table_of(out, migration.new)
        if new_table is not None and new_name in new_table:
            notes.append(f"{note}; ignored, {migration.new} is also set: remove it")
        else:
            _put(out, migration.new, value)
            notes.append(f"{note}; read as {migration.new}: rename it ({MIGRATIONS_DOC})")
    return out, notes


def removed_message(key: str) -> str | None:
    """The error for a key that was removed without being honoured, naming its successor."""
    for migration in MIGRATIONS:
        if migration.old == key and not migration.honoured:
            return f"removed: use {migration.new} ({migration.why}; {MIGRATIONS_DOC})"
    return None


def _copy_tables(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tables(v) if isinstance(v, Mapping) else v for k, v in doc.items()}


def _table_of(doc: dict[str, Any], dotted: str) -> tuple[dict[str, Any] | None, str]:
    """The table holding `dotted` (None when a table on the way is missing or not one)."""
    *tables, name = dotted.split(".")
    node: Any = doc
    for table in tables:
        node = node.get(table) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), name


def _put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, name = dotted.split(".")
    node = doc
    for table in tables:
        child = node.setdefault(table, {})
        if not isinstance(child, dict):
            return  # a malformed table: validation reports it
        node = child
    node[name] = value


# -- layers --------------------------------------------------------------------------------

# A layer of settings: the name messages give it (a file, "environment", "command line") and
# the nested values it sets.
Layer = tuple[str, dict[str, Any]]
ENV_LAYER = "environment"
FLAG_LAYER = "command line"


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merge_layers(layers: list[Layer]) -> dict[str, Any]:
    """The layers' values, each over the ones before it."""
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    return merged


def own_layers(
    config_path: Path | None, overrides: Mapping[str, Any] | None, environ: Mapping[str, str]
) -> tuple[Path | None, list[Layer]]:
    """sbtc-ops' own layers, lowest first: its file, SBTC_OPS_* variables, the command's flags
    (with the file's path, None when there is none)."""
    file_path = find_config_file(config_path, environ)
    return file_path, [
        (
            str(file_path) if file_path else "sbtc-ops.toml",
            read_toml(file_path) if file_path else {},
        ),
        (ENV_LAYER, env_layer(environ)),
        (FLAG_LAYER, _prune_none(overrides or {})),
    ]


def _setting_variables(environ: Mapping[str, str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Each SBTC_OPS_SECTION__KEY variable that names a setting, with its key path."""
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in NOT_SETTINGS:
            yield name, tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """SBTC_OPS_SECTION__KEY=value → nested dict (lists as JSON or comma-separated)."""
    layer: dict[str, Any] = {}
    for name, path in _setting_variables(environ):
        value = environ[name]
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # SBTC_OPS_A=x beside SBTC_OPS_A__B=y
                message = "sets a key inside a value another SBTC_OPS_* variable sets"
                problem = ConfigProblem(f"{ENV_LAYER} {name}", ".".join(path), message)
                raise InvalidConfig(str(problem), [problem])
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


def build_settings(layers: list[Layer], environ: Mapping[str, str]) -> Settings:
    """Migrate each layer's deprecated keys, merge the layers lowest first and validate once;
    raises InvalidConfig naming the layer of every bad value."""
    migrated: list[Layer] = []
    notes: list[str] = []
    for name, doc in layers:
        layer, found = migrate_layer(name, doc)
        migrated.append((name, layer))
        notes += found
    try:
        # Everything is passed as init values so the precedence of the layers is the only one.
        settings = Settings.model_validate(merge_layers(migrated))
    except ValidationError as exc:
        problems = _problems(exc, migrated, environ)
        lines = ["invalid configuration:", *(f"  {problem}" for problem in problems)]
        raise InvalidConfig("\n".join(lines), problems) from None
    settings.deprecations[:0] = notes
    return settings


def layer_of(path: tuple[Any, ...], layers: list[Layer]) -> str | None:
    """The name of the highest layer that sets `path` (a file, env, flag), None if none does."""
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
    return None


def _env_variable(path: tuple[Any, ...], environ: Mapping[str, str]) -> str | None:
    """The SBTC_OPS_* variable that set `path` (or the table or list holding it)."""
    keys = tuple(str(part) for part in path)
    for name, parts in _setting_variables(environ):
        if keys[: len(parts)] == parts:
            return name
    return None


def _problems(
    exc: ValidationError, layers: list[Layer], environ: Mapping[str, str]
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors():
        location = tuple(error["loc"])
        key = ".".join(str(p) for p in location)
        origin = layer_of(location, layers) or "settings"
        if origin == ENV_LAYER:
            origin = f"environment {_env_variable(location, environ) or '(SBTC_OPS_*)'}"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = removed_message(key) or "unknown setting"
        problems.append(ConfigProblem(origin, key, message))
    return problems


# -- secrets -------------------------------------------------------------------------------


def secret_values(settings: Settings) -> list[str]:
    """Every secret value the settings hold: keys, passwords inside URLs and DSNs, API keys,
    tokens and webhook URLs (credentials as a whole)."""
    values: list[str] = []
    signer = settings.signer
    if signer.private_key is not None:
        key = signer.private_key.get_secret_value().strip().lower().removeprefix("0x")
        values += [key, key[:64]]
    urls = [s.get_secret_value() for s in signer.bitcoin_rpc_endpoints]
    urls += settings.stacks.endpoints
    if settings.audit.stacks_node_url:
        urls.append(settings.audit.stacks_node_url)
    for secret_url in (settings.effective_db_url, settings.db.url, settings.audit.bitcoin_rpc_url):
        if secret_url is not None:
            urls.append(secret_url.get_secret_value())
    for url in urls:
        if url:
            values += redact.url_secrets(url) if "://" in url else redact.dsn_secrets(url)
    for secret in (
        settings.stacks.api_key,
        settings.backup.s3.secret_access_key,
        settings.audit.github_token,
        *settings.serve.webhooks,
    ):
        if secret is not None:
            values.append(secret.get_secret_value())
    return [v for v in values if v]


# -- showing -----------------------------------------------------------------------------


def _show_value(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return redact.redact_secret_url(value.get_secret_value())
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


def _looks_secret(name: str) -> bool:
    lowered = name.lower()
    return "private" in lowered or redact.looks_secret_name(lowered)


def redacted_view(settings: Settings) -> dict[str, Any]:
    """The effective configuration with every secret redacted, presets applied."""
    shown = {name: _show_value(getattr(settings, name)) for name in Settings.model_fields}
    shown["effective"] = {
        "deployer": settings.effective_deployer,
        "stacks_endpoints": [redact_url(url) for url in settings.effective_stacks_endpoints],
        "api_key_hosts": settings.effective_api_key_hosts,
        "db_url": _show_value(settings.effective_db_url),
        # Where the imported private key was found: reported, not a setting.
        "private_key_source": settings.signer.private_key_source,
    }
    shown["config_files"] = list(settings.source_files)
    return shown
