"""Pristine data directories of throwaway clusters, kept for the next drill.

initdb costs about a second of every drill (1.1 s of 7.5 s on the 1 GB bench), and creating the
drill's roles and empty database a few tenths more. The result depends only on the PostgreSQL
binaries, initdb's options, the kind's setup statements (pg/cluster.ClusterSetup) and the user
it runs as, never on an archive. So the first cluster of a kind keeps a copy of its data
directory, taken right after initdb (or, with a setup, after the setup and a clean shutdown)
and before anything else touches it, under the state directory; the next ones copy it instead.

Trust: the templates live in the state directory, beside state.db, and are exactly as trusted
(written only by sbtc-ops' own users; the sandbox's user cannot reach that directory outside
its view). A sandbox sees a template only read-only and only while copying it, never while an
archive is loaded. A template is written under a temporary name and renamed into place whole;
one that cannot be copied is dropped, and the cluster falls back to initdb.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sbtc_ops.errors import SbtcOpsError
from sbtc_ops.pg.binaries import PgBinaries
from sbtc_ops.pg.sandbox import Sandbox
from sbtc_ops.statedir import make_state_subdir

log = logging.getLogger(__name__)

TEMPLATES_SUBDIR = "cluster-templates"
COPY_TIMEOUT_S = 120.0
STAGING_PREFIX = ".new-"
STALE_STAGING_S = 86400.0  # a crashed run's half-written template: removed after a day
# Another kind's template (root's CLI and the service share one state directory, each with its
# own sandbox user) is kept while used; one unused this long (an old PostgreSQL's) goes.
UNUSED_S = 30 * 86400.0
USED_SUFFIX = ".used"  # beside each template, ours to touch (the template is the sandbox's)
# The copy is bound by the latency of creating its ~700 files, not by bandwidth: one cp per
# database directory and per other top-level entry, side by side, take about half the time of
# one cp of the whole (0.31 s against 0.57 s in the sandbox on the bench host).
# $1: the template, $2: the empty data directory. Fails if any cp fails.
PARALLEL_COPY = """
set -u
src=$1 dst=$2 pids=
mkdir -- "$dst/base" && chmod --reference="$src/base" -- "$dst/base" || exit 1
for entry in "$src"/* "$src"/base/*; do
  case $entry in "$src/base") continue ;; "$src"/base/*) to=$dst/base ;; *) to=$dst ;; esac
  cp -a -- "$entry" "$to/" & pids="$pids $!"
done
status=0
for pid in $pids; do wait "$pid" || status=1; done
exit $status
"""


class TemplateCache:
    """The template for one (binaries, initdb options, sandbox user and mode)."""

    def __init__(
        self,
        root: Path,
        sandbox: Sandbox,
        options: list[str],
        binaries: PgBinaries,
        setup: list[Any] | None = None,
    ) -> None:
        self.root = root
        self.sandbox = sandbox
        identity: list[Any] = [
            binaries.version,
            str(binaries.bin_dir),
            options,
            sandbox.run_as.uid,
            sandbox.run_as.gid,
            str(sandbox.mode),
        ]
        if setup is not None:  # (a kind without one keeps the key it always had)
            identity.append(setup)
        key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
        self.path = root / key

    def restore(self, data_dir: Path) -> bool:
        """Copy the template into the (empty) data directory: False when there is none or it
        could not be copied (the data directory is then empty again)."""
        if not self.path.is_dir() or self.path.is_symlink():
            return False
        copy = ["sh", "-c", PARALLEL_COPY, "copy-template", str(self.path), str(data_dir)]
        done = self.sandbox.exposing(ro=(self.path,)).run(copy, timeout_s=COPY_TIMEOUT_S)
        if done.returncode == 0:
            self._mark_used()
            return True
        log.warning("cluster template %s unusable, running initdb: %s", self.path, done.stderr)
        self._remove(self.path)
        empty = ["find", str(data_dir), "-mindepth", "1", "-delete"]
        self.sandbox.run(empty, timeout_s=COPY_TIMEOUT_S)
        return False

    def save(self, data_dir: Path) -> None:
        """Keep a copy of a data directory initdb just made (best effort: a failure costs
        only the next drill's initdb)."""
        staging: Path | None = None
        try:
            make_state_subdir(self.root.parent, self.root.name)
            if self.path.exists():
                return
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
            # Not the setgid bit a shared state directory (2770) hands down: every directory
            # copied in would inherit it, and copying those back out under systemd's
            # RestrictSUIDSGID= is refused. A template is the sandbox user's alone.
            staging.chmod(0o700)
            self.sandbox.run_as.chown(staging)
            copy = ["sh", "-c", PARALLEL_COPY, "keep-template", str(data_dir), str(staging)]
            done = self.sandbox.exposing(rw=(staging,)).run(copy, timeout_s=COPY_TIMEOUT_S)
            if done.returncode != 0:
                raise OSError(f"cp failed: {done.stderr.strip()[-200:]}")
            staging.rename(self.path)  # whole or not at all; another drill's may win
            staging = None
            self._mark_used()
        except (OSError, SbtcOpsError) as exc:
            log.debug("cluster template not kept: %s", exc)
        finally:
            if staging is not None:
                self._remove(staging)
        self._prune()

    def _mark_used(self) -> None:
        marker = self.path.with_name(self.path.name + USED_SUFFIX)
        try:
            marker.touch(mode=0o600)
            os.utime(marker)
        except OSError as exc:
            log.debug("could not mark %s used: %s", self.path, exc)

    def _prune(self) -> None:
        """Templates unused for UNUSED_S (an upgrade leaves the old PostgreSQL's), stale
        half-written ones, and markers of templates that are gone."""
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry == self.path or entry.name.endswith(USED_SUFFIX):
                continue
            if entry.name.startswith(STAGING_PREFIX):
                if _older_than(entry, STALE_STAGING_S):
                    self._remove(entry)
                continue
            marker = entry.with_name(entry.name + USED_SUFFIX)
            if _older_than(marker if marker.exists() else entry, UNUSED_S):
                self._remove(entry)
                marker.unlink(missing_ok=True)
        for marker in entries:
            if marker.name.endswith(USED_SUFFIX) and not marker.with_suffix("").exists():
                marker.unlink(missing_ok=True)

    def _remove(self, path: Path) -> None:
        try:
            self.sandbox.run_as.remove_tree(path)
        except (OSError, SbtcOpsError) as exc:
            log.debug("could not remove %s: %s", path, exc)


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > seconds
    except OSError:
        return False
