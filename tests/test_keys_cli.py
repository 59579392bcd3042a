"""`sbtc-ops key …` as a real process: exit codes, JSON documents, and no key anywhere."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from sbtc_ops.state import StateStore
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.cli import CliResult, clean_env, run_cli, sbtc_ops_executable
from tests.support.keys import SampleKey, new_key, signer_config, write_private

PASSPHRASE = "correct horse battery staple"


class Host:
    """A signer host in tmp_path: signer config, env file with the key, state dir, HOME."""

    def __init__(self, root: Path, sample: SampleKey, node_url: str | None) -> None:
        self.root = root
        self.sample = sample
        self.work = root / "work"
        self.work.mkdir()
        (root / "home").mkdir()
        other = new_key()
        self.config = signer_config(
            root / "signer-config.toml",
            None,
            bootstrap=[sample.public_key, other.public_key],
            endpoints=[node_url] if node_url else None,
        )
        # The key as docker compose passes it, with the stacks suffix byte the signer trims.
        self.env_file = write_private(root / ".env", f"SIGNER_SIGNER__PRIVATE_KEY={sample.hex}01\n")
        self.inputs = {self.config, self.env_file}
        self.results: list[CliResult] = []

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def env(self, *, configured: bool = True) -> dict[str, str]:
        extra = {"HOME": str(self.root / "home"), "SBTC_OPS_STACKS__RETRIES": "0"}
        if configured:
            extra["SBTC_OPS_SIGNER__CONFIG_PATH"] = str(self.config)
            extra["SBTC_OPS_SIGNER__ENV_FILE"] = str(self.env_file)
        return clean_env(self.state_dir, extra)

    def run(self, *args: str, stdin: str | None = None, configured: bool = True) -> CliResult:
        result = run_cli(
            *args, cwd=self.work, env=self.env(configured=configured), input_text=stdin
        )
        self.results.append(result)
        return result


@pytest.fixture
def node() -> Iterator[FakeStacksNode]:
    with FakeStacksNode() as fake:
        yield fake


@pytest.fixture
def host(tmp_path: Path, node: FakeStacksNode) -> Host:
    sample = new_key()
    node.set_signer_data(sample.public_bytes, [sample.public_bytes, new_key().public_bytes], 2)
    return Host(tmp_path, sample, node.url)


def files(directory: Path, pattern: str) -> list[str]:
    return sorted(str(path) for path in directory.glob(pattern))


# -- key check ---------------------------------------------------------------------------------


def test_check_json_finds_the_key_in_the_env_file(host: Host) -> None:
    result = host.run("key", "check", "--json")
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)  # one document, nothing else on stdout
    assert doc["ok"] is True and doc["public_key"] == host.sample.public_key
    assert "env file" in doc["source"]
    statuses = {check["id"]: check["status"] for check in doc["checks"]}
    assert statuses["key.file_mode"] == "pass"
    assert statuses["key.in_bootstrap_set"] == "pass"
    assert statuses["key.in_onchain_signer_set"] == "pass"
    assert statuses["key.not_well_known"] == "pass"
    assert statuses["key.cold_backup_verified"] == "warn"


def test_check_fails_on_a_readable_key_file_and_a_key_outside_the_signer_set(
    host: Host, node: FakeStacksNode
) -> None:
    host.env_file.chmod(0o644)
    node.set_signer_data(None, [new_key().public_bytes], 1)
    result = host.run("key", "check")
    assert result.code == 1
    assert f"public key  {host.sample.public_key}" in result.stdout
    assert "readable by its group and every user (mode 0644)" in result.stdout
    assert "not in the current on-chain signer set" in result.stdout


def test_check_without_any_key_or_with_a_bad_suffix_exits_2(host: Host) -> None:
    missing = host.run("key", "check", "--offline", configured=False)
    assert missing.code == 2 and "no signer private key found" in missing.stderr
    bad = write_private(host.root / "bad-key", host.sample.hex + "02\n")
    host.inputs.add(bad)
    result = host.run("key", "check", "--offline", "--key-file", str(bad))
    assert result.code == 2
    assert "last byte is not 01" in result.stderr and "Traceback" not in result.stderr


# -- backup and verify-backup ------------------------------------------------------------------


def test_shares_backup_verify_and_the_record_key_check_reads(host: Host) -> None:
    made = host.run(
        "key",
        "backup",
        "--out",
        str(host.root / "cold"),
        "--shares",
        "3",
        "--threshold",
        "2",
        "--json",
    )
    assert made.code == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["read_back_verified"] and doc["public_key"] == host.sample.public_key
    shares = files(host.root / "cold", "*-share-*.txt")
    assert len(shares) == 3

    too_few = host.run("key", "verify-backup", shares[0])
    assert too_few.code == 1 and "needs 2" in too_few.stdout

    ok = host.run("key", "verify-backup", *shares[1:], "--json")
    assert ok.code == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["backups"][0]["outcome"] == "ok"

    check = host.run("key", "check", "--json")
    statuses = {c["id"]: c["status"] for c in json.loads(check.stdout)["checks"]}
    assert statuses["key.cold_backup_verified"] == "pass"
    with StateStore.open(host.state_dir) as store:
        outcomes = [e.outcome for e in store.events("key-backup-verify", host.sample.public_key)]
    assert outcomes == ["ok", "too-few-shares"]


def test_recipients_backup_and_verification_with_an_identity(host: Host) -> None:
    identity = pyrage.x25519.Identity.generate()
    identity_file = write_private(host.root / "identity.txt", f"# offline\n{identity}\n")
    host.inputs.add(identity_file)
    made = host.run(
        "key", "backup", "--out", str(host.root / "cold"), "--recipient", str(identity.to_public())
    )
    assert made.code == 0, made.stderr
    (age_file,) = files(host.root / "cold", "*.age")
    no_identity = host.run("key", "verify-backup", age_file)
    assert no_identity.code == 2 and "--identity" in no_identity.stderr
    ok = host.run("key", "verify-backup", age_file, "--identity", str(identity_file))
    assert ok.code == 0, ok.stdout + ok.stderr


def test_verify_against_the_chain_when_no_key_is_configured(
    host: Host, node: FakeStacksNode
) -> None:
    made = host.run(
        "key", "backup", "--out", str(host.root / "cold"), "--shares", "2", "--threshold", "2"
    )
    assert made.code == 0, made.stderr
    shares = files(host.root / "cold", "*-share-*.txt")
    # An offline-style host: only the chain says which keys are signers.
    env = host.env(configured=False)
    env["SBTC_OPS_STACKS__ENDPOINTS"] = json.dumps([node.url])
    ok = run_cli("key", "verify-backup", *shares, "--json", cwd=host.work, env=env)
    assert ok.code == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["expected"]["basis"] == "the on-chain signer set"

    node.set_signer_data(None, [new_key().public_bytes], 1)
    mismatch = run_cli("key", "verify-backup", *shares, cwd=host.work, env=env)
    assert mismatch.code == 1 and "mismatch" in mismatch.stdout

    other = new_key().public_key
    offline = run_cli(
        "key", "verify-backup", *shares, "--offline", "--public-key", other, cwd=host.work, env=env
    )
    assert offline.code == 1 and f"not {other}" in offline.stdout


def test_backup_needs_exactly_one_method(host: Host) -> None:
    result = host.run(
        "key",
        "backup",
        "--out",
        str(host.root / "cold"),
        "--passphrase",
        "--shares",
        "3",
        "--threshold",
        "2",
    )
    assert result.code == 2 and "choose one kind of backup" in result.stderr
    assert not (host.root / "cold").exists()


# -- nothing leaks ------------------------------------------------------------------------------


def test_no_output_channel_or_file_ever_holds_the_key(host: Host) -> None:
    """Every command, verbose, success and failure paths: stdout, stderr (where -vv logs go),
    every file written (backups, sidecars, state database and its WAL) — no 8-hex-digit run
    of the key, and no 8-byte run of its raw bytes."""
    root = host.root
    identity = pyrage.x25519.Identity.generate()
    identity_file = write_private(root / "identity.txt", f"{identity}\n")
    bad_key = write_private(root / "bad-key", host.sample.hex[:-2] + "\n")
    key_file = write_private(root / "key", host.sample.hex + "\n")
    host.inputs |= {identity_file, bad_key, key_file}

    v = "-vv"
    assert host.run(v, "key", "check").code == 0
    assert host.run(v, "key", "check", "--json").code == 0
    assert (
        host.run(
            v,
            "key",
            "backup",
            "--out",
            str(root / "c1"),
            "--passphrase-fd",
            "0",
            stdin=PASSPHRASE + "\n",
        ).code
        == 0
    )
    (age1,) = files(root / "c1", "*.age")
    assert (
        host.run(
            v, "key", "verify-backup", age1, "--passphrase-fd", "0", stdin=PASSPHRASE + "\n"
        ).code
        == 0
    )
    wrong = host.run(
        v, "key", "verify-backup", age1, "--passphrase-fd", "0", stdin="not the right passphrase\n"
    )
    assert wrong.code == 1 and "wrong passphrase" in wrong.stdout
    assert (
        host.run(
            v,
            "key",
            "backup",
            "--out",
            str(root / "c2"),
            "--json",
            "--recipient",
            str(identity.to_public()),
        ).code
        == 0
    )
    (age2,) = files(root / "c2", "*.age")
    assert host.run(v, "key", "verify-backup", age2, "--identity", str(identity_file)).code == 0
    assert (
        host.run(
            v, "key", "backup", "--out", str(root / "c3"), "--shares", "3", "--threshold", "2"
        ).code
        == 0
    )
    shares = files(root / "c3", "*-share-*.txt")
    assert host.run(v, "key", "verify-backup", shares[0]).code == 1
    assert host.run(v, "key", "verify-backup", *shares, "--json").code == 0
    assert (
        host.run(
            v,
            "key",
            "backup",
            "--out",
            str(root / "c4"),
            "--key-fd",
            "0",
            "--shares",
            "2",
            "--threshold",
            "2",
            stdin=host.sample.hex + "01\n",
        ).code
        == 0
    )
    assert host.run(v, "key", "check", "--key-file", str(key_file), "--offline").code == 0
    assert host.run(v, "key", "check", "--key-file", str(bad_key)).code == 2
    loose = root / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    refused = host.run(v, "key", "backup", "--out", str(loose), "--shares", "3", "--threshold", "2")
    assert refused.code == 2 and "open to other users" in refused.stderr

    runs = host.sample.forbidden_substrings()
    assert any(run in host.env_file.read_text() for run in runs)  # the detector works
    assert any("sbtc_ops.keys" in result.stderr for result in host.results)  # logs captured
    for result in host.results:
        for channel in (result.stdout, result.stderr):
            leaked = [run for run in runs if run in channel]
            assert not leaked, f"key material in output: {channel[:200]}"
    written = [p for p in root.rglob("*") if p.is_file() and p not in host.inputs]
    assert len(written) >= 12  # backups, sidecars, shares, manifests, the state database
    byte_runs = host.sample.forbidden_byte_runs()
    for path in written:
        data = path.read_bytes()
        text = data.decode("latin-1")
        assert not [run for run in runs if run in text], f"key hex in {path}"
        assert not [run for run in byte_runs if run in data], f"raw key bytes in {path}"


# -- prompts ----------------------------------------------------------------------------------


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {marker!r} in {bytes(seen)!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            raise AssertionError(f"terminal closed before {marker!r}: {bytes(seen)!r}")
        seen += chunk


def test_passphrase_prompt_on_a_terminal_does_not_echo(host: Host) -> None:
    out = host.root / "cold"
    argv = [sbtc_ops_executable(), "key", "backup", "--out", str(out), "--passphrase"]
    env = host.env()
    pid, fd = pty.fork()
    if pid == 0:  # the child: sbtc-ops with this pseudo-terminal as its controlling terminal
        os.chdir(host.work)
        os.execve(argv[0], argv, env)  # noqa: S606 - exec without a shell is the point
    seen = bytearray()
    try:
        _read_until(fd, b"Passphrase for the cold backup:", seen)
        os.write(fd, PASSPHRASE.encode() + b"\n")
        _read_until(fd, b"Repeat the passphrase:", seen)
        os.write(fd, PASSPHRASE.encode() + b"\n")
        _read_until(fd, b"verify-backup FILE", seen)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, bytes(seen)
    assert PASSPHRASE.encode() not in seen  # typed, never echoed
    assert b"Read back from disk" in seen
    (age_file,) = files(out, "*.age")
    assert pyrage.passphrase.decrypt(Path(age_file).read_bytes(), PASSPHRASE)


def test_without_a_terminal_or_descriptor_the_passphrase_is_not_guessed(host: Host) -> None:
    proc = subprocess.run(
        [sbtc_ops_executable(), "key", "backup", "--out", str(host.root / "c"), "--passphrase"],
        cwd=host.work,
        env=host.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,  # no controlling terminal, as under cron or systemd
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "no terminal to ask for the passphrase" in proc.stderr
    assert "--passphrase-fd" in proc.stderr
