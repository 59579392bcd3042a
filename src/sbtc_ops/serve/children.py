"""How the daemon runs a job: one child process per run (`python -m sbtc_ops.serve.worker JOB`).

A crash, a leak or a hang stays in that run; SIGTERM reaches it so a verify removes its
throwaway cluster; and the kernel sends it SIGTERM if the daemon is killed, so it cleans up
then too. The child prints one JSON line (outcome, summary, key figures) which the daemon
records. The job bodies themselves are serve/jobs.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from sbtc_ops.history import JobOutcome
from sbtc_ops.proc import die_with_parent, signal_group
from sbtc_ops.serve.scheduler import JobAction, JobContext, JobResult

_STOP_GRACE_S = 60.0


def worker_argv(job: str) -> list[str]:
    return [sys.executable, "-m", "sbtc_ops.serve.worker", job]


def subprocess_action(env: Mapping[str, str] | None = None) -> JobAction:
    """Run each job as a child process. Call the action from the thread that waits for the
    child: the parent-death signal follows that thread."""

    def run(ctx: JobContext) -> JobResult:
        proc = subprocess.Popen(
            worker_argv(ctx.name),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a Ctrl-C on the daemon's terminal goes through us
            preexec_fn=die_with_parent(signal.SIGTERM),  # prctl only: no locks taken in the child
        )
        stdout, why_stopped = _wait(proc, ctx)
        return result_from_child(stdout, proc.returncode, why_stopped)

    return run


def _wait(proc: subprocess.Popen[bytes], ctx: JobContext) -> tuple[bytes, str | None]:
    deadline = time.monotonic() + ctx.timeout_s
    while True:
        try:
            stdout, _ = proc.communicate(timeout=0.5)
            return stdout, None
        except subprocess.TimeoutExpired:
            pass
        why = (
            "stopped by shutdown"
            if ctx.cancel.is_set()
            else f"timed out after {ctx.timeout_s:g} s"
            if time.monotonic() > deadline
            else None
        )
        if why is None:
            continue
        signal_group(proc, signal.SIGTERM)  # the child unwinds: clusters, temp files
        try:
            stdout, _ = proc.communicate(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            stdout, _ = proc.communicate()
        return stdout, why


def result_from_child(stdout: bytes, returncode: int, why_stopped: str | None) -> JobResult:
    lines = [line for line in stdout.decode(errors="replace").splitlines() if line.strip()]
    try:
        doc = json.loads(lines[-1]) if lines else None
    except ValueError:
        doc = None
    if why_stopped is not None:
        outcome = (
            JobOutcome.INTERRUPTED if why_stopped == "stopped by shutdown" else JobOutcome.ERROR
        )
        data = doc.get("data", {}) if isinstance(doc, dict) else {}
        return JobResult(outcome, why_stopped, data)
    if not isinstance(doc, dict) or doc.get("outcome") not in tuple(JobOutcome):
        how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        return JobResult(JobOutcome.ERROR, f"the job process ended without a result ({how})")
    return JobResult(str(doc["outcome"]), str(doc.get("summary", "")), dict(doc.get("data", {})))


def child_environment(config_path: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if config_path is not None:
        env["SBTC_OPS_CONFIG"] = str(config_path.resolve())
    return env
