"""Facts about the host sbtc-ops runs on and the signer deployment beside it: the command
runners, the one compose reader, the signer's release, images, roles, configuration,
endpoints and data paths. Below audit, serve, signer and discover; above pg/stacks/state."""
