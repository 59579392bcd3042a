"""One job run in its own process: `python -m sbtc_ops.serve.worker JOB`.

Prints one JSON line {"outcome", "summary", "data"} on stdout; logs go to stderr (the
daemon's journal). SIGTERM unwinds like Ctrl-C so throwaway clusters and temp files go.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import NoReturn

from sbtc_ops import progress
from sbtc_ops.config import secret_values
from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.history import JobName, JobOutcome
from sbtc_ops.redact import ScrubbingFormatter, install_output_scrubbing, scrub, scrub_data
from sbtc_ops.serve.jobs import run_job
from sbtc_ops.serve.scheduler import JobResult, one_line_reason
from sbtc_ops.termsafe import install_output_escaping

_EXIT_CODES: dict[str, int] = {JobOutcome.OK: 0, JobOutcome.ERROR: 2, JobOutcome.INTERRUPTED: 130}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> NoReturn:
    signal.signal(signal.SIGTERM, _interrupt)
    install_output_scrubbing()
    install_output_escaping()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(ScrubbingFormatter("%(name)s: %(message)s"))
    # Jobs run beside each other under the daemon: no progress bars on its terminal.
    progress.configure(quiet=True)
    if len(argv) != 1 or argv[0] not in tuple(JobName):
        sys.stderr.write(f"usage: python -m sbtc_ops.serve.worker {{{','.join(JobName)}}}\n")
        sys.exit(2)
    secrets: list[str] = []
    try:
        # Imported inside the try: even a broken install ends as this job's error result.
        from sbtc_ops.discover.load import load_for_command

        settings = load_for_command(None)[0]
        secrets = secret_values(settings)
        result = run_job(argv[0], settings)
    except SbtcOpsError as exc:
        result = JobResult(JobOutcome.ERROR, one_line_reason(exc))
    except KeyboardInterrupt:
        result = JobResult(JobOutcome.INTERRUPTED, "stopped by a signal")
    except Exception as exc:  # noqa: BLE001 - this run's failure, in one line, type included
        result = JobResult(JobOutcome.ERROR, one_line_reason(exc))
        logging.getLogger("sbtc_ops.serve").error(
            "job %s failed: %s", argv[0], scrub(result.summary, secrets)
        )
    document = {
        "outcome": result.outcome,
        "summary": scrub(result.summary, secrets),
        "data": scrub_data(json.loads(json.dumps(result.data, default=str)), secrets),
    }
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Every cleanup (clusters, temp files) ran while the job unwound. Do not wait at exit for
    # a worker thread still blocked on a network read after a signal.
    os._exit(_EXIT_CODES.get(result.outcome, 1))


if __name__ == "__main__":
    main(sys.argv[1:])
