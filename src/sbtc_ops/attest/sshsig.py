"""SSH signatures (the SSHSIG format) through OpenSSH's own `ssh-keygen -Y`: what an auditor
checks with nothing but OpenSSH is exactly what sbtc-ops produced and verifies.

The data goes through stdin, signatures through stdout: no temporary file of ours holds the
statement, and the private key never passes through sbtc-ops (ssh-keygen reads the key file,
an ssh-agent, or a FIDO token itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sbtc_ops.errors import DependencyError, UsageError
from sbtc_ops.files import create_private, write_all
from sbtc_ops.proc import die_with_parent, minimal_env

# The SSHSIG namespace of sbtc-ops' drill attestations: a signature made for another purpose
# (git commits, files) never verifies as one of these.
NAMESPACE = "sbtc-ops-drill-attestation@v1"
SIGN_TIMEOUT_S = 120.0  # a FIDO key waits for a touch
VERIFY_TIMEOUT_S = 30.0
MAX_SIGNATURE_BYTES = 64 * 1024


@dataclass(frozen=True)
class SignatureCheck:
    """One signature file checked against an allowed-signers file."""

    valid: bool
    principals: tuple[str, ...]
    key: str | None  # "ED25519 SHA256:…" as ssh-keygen reports it
    message: str


def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise DependencyError(
            "ssh-keygen (OpenSSH) is not installed: attestations are SSH signatures",
            hint="install it (Debian: apt-get install openssh-client)",
        )
    return path


def _run(argv: list[str], data: bytes, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    env = minimal_env()
    for key in ("SSH_AUTH_SOCK", "HOME", "SSH_ASKPASS", "DISPLAY"):
        if key in os.environ:  # an agent or a FIDO token's helper may hold the key
            env[key] = os.environ[key]
    try:
        return subprocess.run(
            argv,
            input=data,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env=env,
            preexec_fn=die_with_parent(),
        )
    except subprocess.TimeoutExpired:
        raise DependencyError(
            f"{Path(argv[0]).name} did not finish within {timeout_s:.0f} s"
        ) from None


def sign(data: bytes, key: Path) -> bytes:
    """An armored SSHSIG signature of `data` by `key` (a private key file, or the public key
    of a key held by ssh-agent or a FIDO token)."""
    if not key.exists():
        raise UsageError(f"signing key {key} does not exist")
    done = _run(
        [ssh_keygen(), "-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE], data, SIGN_TIMEOUT_S
    )
    if done.returncode != 0 or not done.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise DependencyError(f"ssh-keygen could not sign with {key}: {why[0]}")
    return done.stdout


def check(data: bytes, signature: bytes, allowed_signers: Path) -> SignatureCheck:
    """Who (per `allowed_signers`) made `signature` over `data`, if anyone."""
    if len(signature) > MAX_SIGNATURE_BYTES:
        return SignatureCheck(False, (), None, "signature file too large")
    with _signature_file(signature) as sig_path:
        found = _run(
            [
                ssh_keygen(),
                "-Y",
                "find-principals",
                "-s",
                str(sig_path),
                "-f",
                str(allowed_signers),
            ],
            b"",
            VERIFY_TIMEOUT_S,
        )
        principals = tuple(
            line.strip()
            for line in found.stdout.decode(errors="replace").splitlines()
            if line.strip()
        )
        if found.returncode != 0 or not principals:
            return SignatureCheck(False, (), None, "signed by no key in the allowed-signers file")
        verified = _run(
            [
                ssh_keygen(),
                "-Y",
                "verify",
                "-f",
                str(allowed_signers),
                "-I",
                principals[0],
                "-n",
                NAMESPACE,
                "-s",
                str(sig_path),
            ],
            data,
            VERIFY_TIMEOUT_S,
        )
    text = (verified.stdout + verified.stderr).decode(errors="replace").strip()
    if verified.returncode != 0:
        return SignatureCheck(False, principals, None, text.splitlines()[-1] if text else "invalid")
    return SignatureCheck(True, principals, _key_of(text), text.splitlines()[0] if text else "")


def _key_of(text: str) -> str | None:
    # 'Good "sbtc-ops-drill-attestation@v1" signature for alice with ED25519 key SHA256:…'
    marker = " with "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].splitlines()[0].replace(" key ", " ", 1).strip()


class _signature_file:
    """The signature in a private temporary file: ssh-keygen reads signatures only by path."""

    def __init__(self, signature: bytes) -> None:
        self.signature = signature
        self.path: Path | None = None

    def __enter__(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="sbtc-ops-sig-"))
        self.path = directory / "statement.sig"
        fd = create_private(self.path)
        try:
            write_all(fd, self.signature)
        finally:
            os.close(fd)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)
