"""Which compose service is the signer, the Stacks node, the Bitcoin node; image versions.

Recognised by image first (``ghcr.io/stacks-sbtc/sbtc:signer-…``, ``blockstack/stacks-core``,
``bitcoin/bitcoin``, ``lncm/bitcoind``…), then by the reference deployment's service names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sbtc_ops.host.compose import ComposeFile, compose_files
from sbtc_ops.host.context import HostContext

SIGNER, STACKS, BITCOIN = "signer", "stacks", "bitcoin"
SIGNER_CONFIG_TARGET = "/signer-config.toml"
"""Where the reference deployment mounts signer-config.toml: the mount that marks the signer's
container (discovery, the audit)."""
ROLE_NAMES = {SIGNER: "sBTC signer", STACKS: "Stacks node", BITCOIN: "Bitcoin node"}
_NAMES = {
    SIGNER: ("sbtc-signer", "signer"),
    STACKS: ("stacks-core", "stacks-node", "stacks", "stacks-blockchain"),
    BITCOIN: ("bitcoin", "bitcoind", "bitcoin-core", "bitcoin-node"),
}


@dataclass(frozen=True)
class RoleService:
    role: str
    name: str
    service: dict[str, Any]
    compose: ComposeFile

    @property
    def image(self) -> str:
        return str(self.service.get("image") or "")


def service_role(name: str, service: dict[str, Any]) -> str | None:
    image = str(service.get("image") or "").lower()
    repository = image.split("@")[0].rsplit(":", 1)[0] if ":" in image else image
    tag = image_tag(image) or ""
    if "sbtc" in repository and (tag.startswith("signer") or "signer" in repository):
        return SIGNER
    if re.search(r"stacks-(core|node|blockchain)(?!-api)", repository) and "signer" not in tag:
        return STACKS
    if re.search(r"bitcoin(d|-core)?$", repository):
        return BITCOIN
    lowered = name.lower()
    for role, names in _NAMES.items():
        if lowered in names:
            return role
    return None


def role_services(ctx: HostContext) -> list[RoleService]:
    """Services of the configured compose files with a known role (Unavailable without
    compose files)."""

    def compute() -> list[RoleService]:
        found = []
        for compose in compose_files(ctx):
            for name, service in compose.services.items():
                role = service_role(name, service)
                if role is not None:
                    found.append(RoleService(role, name, service, compose))
        return found

    return ctx.memo("roles.services", compute)


def image_tag(image: str) -> str | None:
    """`repo:tag@sha256:…` → `tag`; None without a tag."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def image_digest(image: str) -> str | None:
    return image.split("@", 1)[1] if "@" in image else None
