"""Run the real `sbtc-ops` console script in a clean, isolated environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def sbtc_ops_executable() -> str:
    """The console script next to the running interpreter (the test venv), else PATH."""
    candidate = Path(sys.executable).parent / "sbtc-ops"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("sbtc-ops")
    if not found:
        raise RuntimeError("sbtc-ops is not installed in this environment (pip install -e .)")
    return found


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def clean_env(state_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment minus anything that configures sbtc-ops or the signer."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SBTC_OPS_", "SIGNER_"))
    }
    env["SBTC_OPS_STATE_DIR"] = str(state_dir)
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
    timeout: float = 120,
) -> CliResult:
    proc = subprocess.run(
        [sbtc_ops_executable(), *args],
        cwd=cwd,
        env=env if env is not None else clean_env(cwd / "state"),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def communicate_sampling(
    proc: subprocess.Popen[str], sample: Callable[[], None], *, timeout: float, every_s: float
) -> tuple[str, str]:
    """`proc.communicate()` (stdout, stderr) while another thread calls `sample()` every
    `every_s` seconds until the process is done; past `timeout` it is killed and
    TimeoutExpired raised."""
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            sample()
            done.wait(every_s)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        done.set()
        thread.join()
