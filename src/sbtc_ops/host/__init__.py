"""Facts about the host sbtc-ops runs on and the signer deployment beside it, read the same
way by audit, serve, signer (upgrade-check) and discover; below them, above config/stacks/state.

context    HostContext: files under --root, commands (runners in commands), memo, scrubbing
rootpath   paths of a --root tree resolved as if it were /
compose    the one compose reader (bounded YAML): --root files and project directories
roles      which service is the signer, the Stacks node, the Bitcoin node; image tags
http       one bounded HTTP request, failures named; nodes: Bitcoin RPC, Stacks /v2/info and
           Config.toml, the signer's /info
signer     the signer's configuration and env, image version, endpoints as its container sees
           them (endpoints), registry data, read-only DB queries, data volumes
errors     Unavailable (a fact this host does not offer: the audit's Skip), EvidenceError

The signer's release as sbtc-ops' release table judges it is sbtc_ops.signer.running.
"""
