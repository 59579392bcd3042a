"""sbtc-ops settings and the signer's own configuration.

Precedence, highest first: command-line flags > SBTC_OPS_* environment > sbtc-ops.toml >
the signer's signer-config.toml (plus its SIGNER_<SECTION>__<KEY> environment) > network preset.

The file is found via --config, $SBTC_OPS_CONFIG, ./sbtc-ops.toml, /etc/sbtc-ops/sbtc-ops.toml.
Every secret is a SecretStr (or a URL whose password is redacted when shown).
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo

from sbtc_ops import redact
from sbtc_ops.errors import ConfigError, SbtcOpsError
from sbtc_ops.redact import REDACTED as REDACTED  # re-exported for older callers
from sbtc_ops.redact import redact_url as redact_url

Network = Literal["mainnet", "testnet", "devnet"]

DEFAULT_CONFIG_PATHS = (Path("sbtc-ops.toml"), Path("/etc/sbtc-ops/sbtc-ops.toml"))
ENV_PREFIX = "SBTC_OPS_"
SIGNER_ENV_PREFIX = "SIGNER_"
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
    private_key_source: str | None = Field(
        None,
        description="Where the private key was found; set by sbtc-ops when it imports the key.",
        examples=["/opt/signer/signer-config.toml [signer] private_key"],
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

    compose_files: list[Path] = Field(
        default_factory=list,
        description="docker compose files of the signer and its nodes.",
        examples=[["/opt/sbtc/docker-compose.yml"]],
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
    key_backup_max_age_days: int = Field(
        365,
        ge=1,
        description="Warn (KEY checks) when the last verified cold key backup is older.",
        examples=[180],
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
        description="Its compose files (default: the standard names found in compose_dir).",
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
    verify_jobs: int = Field(
        2, ge=1, le=64, description="Parallel restore jobs of a scheduled verify.", examples=[4]
    )
    job_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="A run is stopped after this.", examples=[3600.0]
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
        from croniter import croniter

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
    attest: AttestSettings = Field(
        default_factory=AttestSettings,
        description="Drill attestations: the signing key and who may sign.",
    )

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


# ---------------------------------------------------------------------------------------


def _default_state_dir() -> Path:
    from sbtc_ops.statedir import default_state_dir

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
        problem = ConfigProblem(str(path), "", f"not valid TOML: {exc}")
        raise InvalidConfig(str(problem), [problem]) from None
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
            problem = ConfigProblem(
                where,
                "signer.network",
                f"{signer['network']!r} is not one of mainnet, testnet, regtest",
            )
            raise InvalidConfig(f"{where}: signer.network = {problem.message}", [problem])
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


ENV_LAYER = "environment"


def _locate(path: tuple[Any, ...], layers: list[tuple[str, dict[str, Any]]]) -> str:
    """Name the layer (file, env, flag) a bad key came from, for the error message."""
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


def _env_variable(path: tuple[Any, ...], environ: Mapping[str, str]) -> str | None:
    """The SBTC_OPS_* variable that set `path` (or the table or list holding it)."""
    keys = tuple(str(part) for part in path)
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name == "SBTC_OPS_CONFIG":
            continue
        parts = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if keys[: len(parts)] == parts:
            return name
    return None


def _signer_layer_name(config_path: Path | None, env_file: Path | None) -> str:
    if config_path is not None:
        return f"the signer's configuration ({config_path})"
    if env_file is not None:
        return f"the signer's environment ({env_file})"
    return "the signer's environment (SIGNER_*)"


def load_settings(
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings; raises ConfigError naming file, key and problem
    (InvalidConfig, with every problem and its layer, when what was read is wrong)."""
    environ = os.environ if environ is None else environ
    file_path = find_config_file(config_path, environ)
    file_doc = read_toml(file_path) if file_path else {}
    env_doc = _env_layer(environ)
    flag_doc = _prune_none(overrides or {})

    # The signer config's location can be set in any layer above it.
    pre = deep_merge(deep_merge(file_doc, env_doc), flag_doc)
    signer_pre = pre.get("signer", {}) if isinstance(pre.get("signer"), dict) else {}
    discovered_doc, discovered_from = _discovered_layer(file_path, pre, environ)
    pre = deep_merge(discovered_doc, pre)
    signer_pre = pre.get("signer", {}) if isinstance(pre.get("signer"), dict) else {}
    signer_cfg = Path(signer_pre["config_path"]) if signer_pre.get("config_path") else None
    signer_env = Path(signer_pre["env_file"]) if signer_pre.get("env_file") else None
    compose_env = _compose_signer_env(pre)
    signer_doc = signer_layer(signer_cfg, signer_env, {**compose_env, **environ})
    _name_compose_key_source(signer_doc, compose_env, environ, pre)
    layers = [
        ("discovered deployment", discovered_doc),
        (_signer_layer_name(signer_cfg, signer_env), signer_doc),
        (str(file_path) if file_path else "sbtc-ops.toml", file_doc),
        (ENV_LAYER, env_doc),
        ("command line", flag_doc),
    ]
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    try:
        # Everything is passed as init values so the precedence above is the only one.
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems = _problems(exc, layers, environ)
        lines = ["invalid configuration:", *(f"  {problem}" for problem in problems)]
        raise InvalidConfig("\n".join(lines), problems) from None
    if file_path:
        settings.source_files.append(str(file_path))
    settings.discovered_from = discovered_from
    register_secrets(settings, {**compose_env, **environ})
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


def register_secrets(settings: Settings, environ: Mapping[str, str]) -> None:
    """Make every secret of these settings, and of the environment and the signer's env file,
    unprintable by this process (see sbtc_ops.redact)."""
    redact.register(*secret_values(settings))
    redact.register_environment(environ)
    env_file = settings.signer.env_file
    if env_file is not None:
        # Already read once by signer_layer; a file gone since holds nothing to hide.
        with contextlib.suppress(ConfigError):
            redact.register_environment(read_env_file(env_file))


def _problems(
    exc: ValidationError, layers: list[tuple[str, dict[str, Any]]], environ: Mapping[str, str]
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors():
        location = tuple(error["loc"])
        origin = _locate(location, layers)
        if origin == ENV_LAYER:
            origin = f"environment {_env_variable(location, environ) or '(SBTC_OPS_*)'}"
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(ConfigProblem(origin, ".".join(str(p) for p in location), message))
    return problems


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
    shown = {
        name: _show_value(getattr(settings, name))
        for name in Settings.model_fields
        if name != "source_files"
    }
    shown["effective"] = {
        "deployer": settings.effective_deployer,
        "stacks_endpoints": [redact_url(url) for url in settings.effective_stacks_endpoints],
        "api_key_hosts": settings.effective_api_key_hosts,
        "db_url": _show_value(settings.effective_db_url),
    }
    shown["config_files"] = list(settings.source_files)
    return shown
