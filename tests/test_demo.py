"""`sbtc-ops demo`: the README's first command, in a fresh venv, with no network.

The fresh venv is made exactly as the README says (`python3 -m venv DIR`, `DIR/bin/pip install
.`, `DIR/bin/sbtc-ops demo`), with two concessions so the test neither downloads nor builds the
dependencies again: the venv sees the test venv's site-packages through a .pth file, and pip
installs the checkout with --no-deps --no-build-isolation --no-index. `demo` itself then runs
in a new network namespace (only loopback up): it must need no network at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sbtc_ops.clarity import Buffer, UInt
from sbtc_ops.config import Settings
from sbtc_ops.devtools.standin_node import LABEL, StandInNode, registry_values
from sbtc_ops.stacks import read_aggregate_key, read_signer_data
from tests.support.cli import CliResult, clean_env
from tests.support.pg import assert_no_postgres_left

ROOT = Path(__file__).resolve().parent.parent
DEPLOYER = "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"
KEY = bytes.fromhex("03d8c4344861fc7590fd812c24884a3bfd9374d8ba865a787ff53c9060020aa967")
NEXT_STEPS = ("sbtc-ops chain aggregate-key", "sbtc-ops backup --db", "sbtc-ops verify --latest")


def readme_commands() -> list[str]:
    """The first two ```sh blocks of the README: set-up, then the test suite."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [block.strip() for block in blocks[:2]]


def test_readme_starts_with_install_then_demo_then_tests() -> None:
    first, second = readme_commands()
    assert first == (
        "python3 -m venv /opt/sbtc-ops && /opt/sbtc-ops/bin/pip install --require-hashes "
        "-r src/sbtc_ops/lock/runtime.lock && /opt/sbtc-ops/bin/pip install --no-deps "
        "--no-build-isolation . && /opt/sbtc-ops/bin/sbtc-ops demo"
    )
    assert second == "bash scripts/test.sh"


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """TMPDIR for the demo: everything it makes goes there and must be gone afterwards."""
    path = Path(tempfile.mkdtemp(prefix="sdemo-", dir="/tmp"))
    path.chmod(0o711)  # the unprivileged PostgreSQL user passes through it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fresh_venv() -> Iterator[Path]:
    """The README's install into a new venv under /opt (readable by the PostgreSQL user)."""
    venv = Path(tempfile.mkdtemp(prefix="sbtc-ops-demo-venv-", dir="/opt"))
    source = Path(tempfile.mkdtemp(prefix="sbtc-ops-src-"))
    try:
        # A copy of what pip needs: building in place would leave build/ and *.egg-info.
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
        first, _ = readme_commands()
        venv_cmd, lock_cmd, pip_cmd, _demo_cmd = (part.strip() for part in first.split("&&"))
        assert venv_cmd == "python3 -m venv /opt/sbtc-ops"
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        site = Path(sysconfig.get_paths(vars={"base": str(venv)})["purelib"])
        (site / "zz-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        # The locked dependencies are the test venv's own (installed from the same pins by
        # scripts/test.sh; tests/test_lock.py installs the lock into a fresh venv for real).
        assert lock_cmd.endswith("--require-hashes -r src/sbtc_ops/lock/runtime.lock")
        assert pip_cmd == "/opt/sbtc-ops/bin/pip install --no-deps --no-build-isolation ."
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps"]
        pip += ["--no-build-isolation", "--no-index", "."]
        done = subprocess.run(pip, cwd=source, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        yield venv
    finally:
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)


def _offline(argv: list[str]) -> list[str]:
    """argv run in a new network namespace with only loopback up."""
    quoted = " ".join(f"'{arg}'" for arg in argv)
    return ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {quoted}"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_readme_first_command_in_a_fresh_venv_without_network(
    fresh_venv: Path, private_tmp: Path, tmp_path: Path
) -> None:
    operator_state = tmp_path / "operator-state"
    env = clean_env(operator_state, {"TMPDIR": str(private_tmp), "HOME": str(tmp_path)})
    env.pop("PYTHONPATH", None)  # the fresh venv's own copy must be what runs
    # Installed for real: the console script of the fresh venv, not the test venv's.
    sbtc_ops = fresh_venv / "bin" / "sbtc-ops"
    code = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", "import sbtc_ops; print(sbtc_ops.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert code.startswith(str(fresh_venv)), code
    done = subprocess.run(
        _offline([str(sbtc_ops), "demo", "--json"]),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(done.stdout)
    assert document["ok"] is True
    assert document["verify"]["verdict"] == "match"
    assert document["chain"]["label"] == LABEL
    checks = {check["id"]: check["status"] for check in document["verify"]["checks"]}
    assert checks["dkg.shares_decrypt"] == "pass"
    assert checks["restore.complete"] == "pass"
    assert document["backup"]["encryption"] is not None
    steps = document["next_steps"]
    assert all(step.startswith(cmd) for step, cmd in zip(steps, NEXT_STEPS, strict=True)), steps
    # Nothing left behind: no postgres, no file in its TMPDIR, the operator's state untouched.
    assert_no_postgres_left(private_tmp)
    assert list(private_tmp.iterdir()) == []
    assert not operator_state.exists()


def test_demo_report_on_a_terminal_names_the_stand_in_and_the_next_steps(
    cli: Callable[..., CliResult], private_tmp: Path
) -> None:
    result = cli("demo", env={"TMPDIR": str(private_tmp)}, timeout=300)
    assert result.code == 0, result.stderr[-3000:]
    assert "verdict: match" in result.stdout
    assert "local stand-in, not the chain" in result.stdout
    tail = result.stdout[result.stdout.index("On a real signer:") :]
    positions = [tail.index(command) for command in NEXT_STEPS]
    assert positions == sorted(positions), tail
    assert_no_postgres_left(private_tmp)
    assert list(private_tmp.iterdir()) == []


# -- the stand-in node, through the real Stacks client ------------------------------------------


def _settings(url: str) -> Settings:
    return Settings.model_validate({"stacks": {"endpoints": [url], "retries": 0}})


def test_stand_in_serves_the_registry_reads_as_a_node_does() -> None:
    signers = [KEY, bytes.fromhex("02" + "11" * 32)]
    with StandInNode(DEPLOYER, registry_values(KEY, signers, 2, DEPLOYER)) as node:
        key = read_aggregate_key(_settings(node.url))
        data = read_signer_data(_settings(node.url))
        assert key.agreed_key == KEY
        assert data.agreed is not None
        assert data.agreed.signer_set == signers and data.agreed.threshold == 2
        assert node.values["get-current-signature-threshold"] == UInt(2)


def test_stand_in_answers_unknown_calls_and_bad_requests_like_a_node() -> None:
    with StandInNode(DEPLOYER, {"get-current-aggregate-pubkey": Buffer(KEY)}) as node:
        base = f"{node.url}/v2/contracts/call-read/{DEPLOYER}/sbtc-registry"
        body = {"sender": DEPLOYER, "arguments": []}
        unknown = httpx.post(f"{base}/get-nothing", json=body).json()
        assert unknown["okay"] is False and "UndefinedFunction" in unknown["cause"]
        other = httpx.post(
            f"{node.url}/v2/contracts/call-read/{DEPLOYER}/other/f", json=body
        ).json()
        assert "NoSuchContract" in other["cause"]
        bad_sender = httpx.post(f"{base}/get-current-aggregate-pubkey", json={"sender": "x"})
        assert bad_sender.status_code == 400
        not_json = httpx.post(f"{base}/get-current-aggregate-pubkey", content=b"{")
        assert not_json.status_code == 400
        assert httpx.get(f"{node.url}/v2/info").status_code == 404
        url = node.url
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/v2/contracts/call-read/{DEPLOYER}/sbtc-registry/x", json=body)
