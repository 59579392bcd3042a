"""Tools for developing and testing sbtc-ops (not used by the commands themselves)."""
