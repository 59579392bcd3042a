"""Signer keys that are public knowledge: a signer using one of them has no secret at all.

Only the *public* keys are listed (derived once from the published private keys), so the
table itself holds nothing sensitive and a key is matched by its derived public key.

Sources (stacks-sbtc/sbtc repository):
- `signer/src/config/default.toml`: `[signer] private_key` (the signer's built-in default),
  which is also devenv signer 1.
- `docker/docker-compose.yml`: `SIGNER_SIGNER__PRIVATE_KEY` of `sbtc-signer-1/2/3`, the
  `STACKING_KEYS`, `ACCOUNT_KEYS`, `MINER_SEED` and `REWARD_RECIPIENT` of the devenv.
- `docker/sbtc/signer/README.md`: the devenv deployer, signer and transaction accounts.
- `docker/testnet/config/signer-config.toml.sample`: the placeholder key 0x…01 (scalar 1).

Other modules (e.g. the audit's secrets checks) should import this table rather than keep
their own copy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WellKnownKey:
    public_key: str  # compressed secp256k1, lowercase hex
    origin: str  # where the matching private key is published


WELL_KNOWN_KEYS: tuple[WellKnownKey, ...] = (
    WellKnownKey(
        "035249137286c077ccee65ecc43e724b9b9e5a588e3d7f51e3b62f9624c2a49e46",
        "the sBTC signer's default config (signer/src/config/default.toml) and devenv sbtc-signer-1",
    ),
    WellKnownKey(
        "031a4d9f4903da97498945a4e01a5023a1d53bc96ad670bfe03adf8a06c52e6380",
        "devenv sbtc-signer-2 (docker/docker-compose.yml)",
    ),
    WellKnownKey(
        "02007311430123d4cad97f4f7e86e023b28143130a18099ecf094d36fef0f6135c",
        "devenv sbtc-signer-3 (docker/docker-compose.yml)",
    ),
    WellKnownKey(
        "025fa7693cfe4b7c7beccdd9e4bfe77f77a3779d5a58faeb69ead7d1ba94d64f76",
        "devenv contract deployer (docker/sbtc/signer/README.md)",
    ),
    WellKnownKey(
        "03fb84a4a2931e7d0ec36bf6e695233bec878fd545bad580751cf4a49d78a7bb27",
        "devenv transaction account 1 (docker/docker-compose.yml ACCOUNT_KEYS)",
    ),
    WellKnownKey(
        "03e5049566e351debe8c4d9918faafac751fdcc0e80d3db59069b45761b39015f5",
        "devenv transaction account 2 (docker/docker-compose.yml ACCOUNT_KEYS)",
    ),
    WellKnownKey(
        "03a89261c20768ce41930371cd4c0d756c872e96b8ff749ac044199cc7100ccd71",
        "devenv transaction account 3 (docker/docker-compose.yml ACCOUNT_KEYS)",
    ),
    WellKnownKey(
        "035379aa40c02890d253cfa577964116eb5295570ae9f7287cbae5f2585f5b2c7c",
        "devenv Stacks miner seed (docker/docker-compose.yml MINER_SEED)",
    ),
    WellKnownKey(
        "02f1bcaf6d33431a1b10d2b7f8d331d4b4199554e01aa5caebe190b886604ab096",
        "devenv PoX reward recipient (docker/docker-compose.yml REWARD_RECIPIENT)",
    ),
    WellKnownKey(
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        "the placeholder 00…01 (scalar 1) of docker/testnet/config/signer-config.toml.sample",
    ),
)

_BY_PUBLIC_KEY = {key.public_key: key for key in WELL_KNOWN_KEYS}


def well_known(public_key_hex: str) -> WellKnownKey | None:
    """The table entry for this compressed public key, or None when it is not public."""
    return _BY_PUBLIC_KEY.get(public_key_hex.lower())
