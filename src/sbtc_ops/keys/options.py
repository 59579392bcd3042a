"""Key custody options: the `[key]` table of sbtc-ops.toml (SBTC_OPS_KEY__<NAME> in the
environment), validated here because the settings keep it as a free table."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sbtc_ops.config import Settings
from sbtc_ops.errors import ConfigError


class KeyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backup_max_age_days: float = Field(
        90.0, gt=0, description="Warn when the last verified cold backup is older than this."
    )
    expected_owner: str | None = Field(
        None, description="User that must own files holding the key (default: root or you)."
    )


def key_options(settings: Settings) -> KeyOptions:
    raw: dict[str, Any] = dict(settings.key)
    try:
        return KeyOptions.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"key.{'.'.join(str(part) for part in error['loc'])}: "
            + ("unknown setting" if error["type"] == "extra_forbidden" else error["msg"])
            for error in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
