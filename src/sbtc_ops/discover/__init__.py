"""Discovery of a signer deployment run with docker compose (`sbtc-ops init`).

`discover()` finds the compose project (from --compose-dir, the current directory, the running
containers' compose labels, or standard paths) and derives what sbtc-ops needs from it, each
fact with where it came from. `docker_api` talks to the engine over its unix socket.
"""

from sbtc_ops.discover.core import Discovery, Fact, discover

__all__ = ["Discovery", "Fact", "discover"]
