"""PostgreSQL plumbing: binaries discovery, the user servers run as, throwaway clusters."""

from sbtc_ops.pg.binaries import ALL_TOOLS, SERVER_TOOLS, PgBinaries, find_binaries
from sbtc_ops.pg.cluster import TUNED_SETTINGS, ThrowawayCluster, postgres_processes
from sbtc_ops.pg.runas import RunAs, check_can_execute, resolve_run_as

__all__ = [
    "ALL_TOOLS",
    "SERVER_TOOLS",
    "TUNED_SETTINGS",
    "PgBinaries",
    "RunAs",
    "ThrowawayCluster",
    "check_can_execute",
    "find_binaries",
    "postgres_processes",
    "resolve_run_as",
]
