"""The restore drill: `sbtc-ops verify`."""
