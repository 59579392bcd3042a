"""The emergency restore of docs/key-custody.md, run exactly as documented: the commands are
read from the document's marked blocks (`<!-- recovery-step: NAME -->`), only the media and
venv paths point at temporary directories. The SLIP-39 tool is installed offline: pip reads no
configuration and no index, only the wheelhouse the online step filled. Also: the man page
and the shell completion the README documents."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import CliResult, sbtc_ops_executable
from tests.support.keys import new_key, write_private

DOC = Path(__file__).resolve().parent.parent / "docs" / "key-custody.md"
AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")


def documented_steps() -> dict[str, list[str]]:
    """NAME → the command lines of the ```console block after `<!-- recovery-step: NAME -->`."""
    text = DOC.read_text()
    steps = {}
    for match in re.finditer(
        r"<!-- recovery-step: ([\w-]+) -->\s*```console\n(.*?)```", text, re.S
    ):
        lines = [line for line in match.group(2).splitlines() if line and line[0] != "#"]
        steps[match.group(1)] = lines
    return steps


def localised(line: str, root: Path) -> str:
    """The documented paths under `root`; nothing else of the command changes."""
    for documented in ("/media/recovery", "/media/cold-a", "/media/identity", "/opt/sbtc-recovery"):
        line = line.replace(documented, str(root) + documented)
    return line


def run_step(
    lines: list[str], root: Path, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + "\n".join(localised(line, root) for line in lines)
    return subprocess.run(
        ["bash", "-c", script],
        cwd=root / "work",
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def offline_env(root: Path) -> dict[str, str]:
    """No pip configuration (this host's find-links/indexes), no proxy: only what the steps
    name. PATH keeps the system tools (python3, age) the offline machine has."""
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(root / "home"), PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1")
    return env


def test_every_documented_step_is_marked() -> None:
    assert set(documented_steps()) == {"online", "offline-install", "slip39", "age"}
    online = " ".join(documented_steps()["online"])
    offline = " ".join(documented_steps()["offline-install"])
    assert "'shamir-mnemonic[cli]" in online and "'shamir-mnemonic[cli]" in offline
    assert "--no-index --find-links /media/recovery/wheelhouse" in offline


@pytest.mark.timeout(900)
def test_slip39_recovery_as_documented_on_an_offline_venv(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    key = new_key()
    key_file = write_private(tmp_path / "signer.key", key.hex + "\n")
    cold = tmp_path / "media" / "cold-a" / "sbtc-key"
    made = cli(
        "key", "backup", "--key-file", str(key_file), "--out", str(cold),
        "--shares", "3", "--threshold", "2",
    )  # fmt: skip
    assert made.code == 0, made.stderr
    for where in ("work", "home", "media/recovery"):
        (tmp_path / where).mkdir(parents=True, exist_ok=True)
    steps = documented_steps()

    # Online: only the wheelhouse download is ours to run (apt-get download needs a Debian
    # mirror; the age it fetches is the system's age used below).
    online = [line for line in steps["online"] if not line.startswith("apt-get ")]
    fetched = run_step(online, tmp_path, {**os.environ, "HOME": str(tmp_path / "home")})
    if fetched.returncode != 0:
        pytest.skip(f"the online step cannot reach a package index here: {fetched.stderr[-300:]}")
    wheels = sorted(p.name for p in (tmp_path / "media/recovery/wheelhouse").iterdir())
    assert any(w.startswith("shamir_mnemonic-") for w in wheels), wheels
    assert any(w.startswith("click-") for w in wheels), wheels  # the [cli] extra

    installed = run_step(steps["offline-install"], tmp_path, offline_env(tmp_path))
    assert installed.returncode == 0, installed.stdout + installed.stderr

    shares = sorted(cold.glob("*-share-*-of-3.txt"))[:2]
    typed = "".join(share_words(share) + "\n" for share in shares)
    recovered = run_step(steps["slip39"], tmp_path, offline_env(tmp_path), stdin=typed + "n\n")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"Your master secret is: {key.hex}" in recovered.stdout


def share_words(path: Path) -> str:
    """A share as a custodian types it: the words of its non-comment lines, on one line."""
    return " ".join(
        word
        for line in path.read_text().splitlines()
        if not line.startswith("#")
        for word in line.split()
    )


@pytest.mark.skipif(AGE is None or AGE_KEYGEN is None, reason="age is not installed (Debian: age)")
def test_age_recovery_as_documented(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    key = new_key()
    key_file = write_private(tmp_path / "signer.key", key.hex + "\n")
    identity = tmp_path / "media" / "identity" / "identity.txt"
    identity.parent.mkdir(parents=True)
    assert AGE_KEYGEN is not None
    subprocess.run([AGE_KEYGEN, "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(
        [AGE_KEYGEN, "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    cold = tmp_path / "media" / "cold-a" / "sbtc-key"
    made = cli("key", "backup", "--key-file", str(key_file), "--out", str(cold),
               "--recipient", recipient)  # fmt: skip
    assert made.code == 0, made.stderr
    (tmp_path / "work").mkdir(exist_ok=True)
    restored = run_step(documented_steps()["age"], tmp_path, offline_env(tmp_path))
    assert restored.returncode == 0, restored.stderr
    out = tmp_path / "work" / "key.hex"
    assert out.read_text().strip() == key.hex
    assert out.stat().st_mode & 0o077 == 0  # umask 077: the key is never world-readable


# -- the man page and shell completion ---------------------------------------------------------


def test_the_man_page_is_generated_from_the_cli(cli: Callable[..., CliResult]) -> None:
    page = cli("man")
    assert page.code == 0, page.stderr
    text = page.stdout
    assert text.startswith(".TH SBTC-OPS 1 ")
    for command in ("backup", "verify", "key backup", "upgrade\\-check", "serve", "config show"):
        assert f".SS sbtc\\-ops {command}\n" in text, command
    assert "\\-\\-expected\\-key" in text and ".SH EXIT STATUS" in text
    assert not re.search(r"[^\x00-\x7f]", text)  # non-ASCII escaped for roff
    groff = shutil.which("groff")
    if groff is not None:  # the page renders without a warning
        rendered = subprocess.run(
            [groff, "-man", "-Tutf8", "-ww", "-z"], input=text, capture_output=True, text=True
        )
        assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr


def test_bash_completion_completes_commands(cli: Callable[..., CliResult], workdir: Path) -> None:
    script = cli("--show-completion", "bash")
    assert script.code == 0, script.stderr
    (workdir / "completion.bash").write_text(script.stdout)
    exe = Path(sbtc_ops_executable())
    probe = (
        f"source {workdir / 'completion.bash'}\n"
        "COMP_WORDS=(sbtc-ops ba); COMP_CWORD=1\n"
        f"_sbtc_ops_completion {exe}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{exe.parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["backup", "backups"]
