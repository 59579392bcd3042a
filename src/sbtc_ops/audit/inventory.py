"""The operator-kept files the audit reads: the secrets inventory and the administrator roster.

secrets.toml (audit.secrets_inventory)::

    [[secret]]
    name = "postgres password"
    location = "/opt/sbtc/.env:POSTGRES_PASSWORD"
    owner = "alice"
    last_rotated = 2026-01-15      # TOML date (or "YYYY-MM-DD")
    max_age_days = 180

roster.toml (audit.roster_file), shared with the operations area (see operations.py)::

    [[administrator]]
    name = "alice"
    timezone = "Europe/Berlin"
    working_hours = ["Mon-Fri 08:00-18:00"]
    contact = "alice@example.org"
    hardware_key = true

    [[former_administrator]]       # people who had access and left
    name = "carol"
    removed = 2026-02-01

An `[[administrator]]` entry with a `removed` date counts as a former administrator too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sbtc_ops.audit.framework import HostContext, Skip, parse_toml

ROSTER_TABLES = ("administrator", "administrators", "former_administrator", "former_administrators")


@dataclass(frozen=True)
class Secret:
    name: str
    location: str
    owner: str
    last_rotated: date
    max_age_days: int


@dataclass(frozen=True)
class Admin:
    """Who had access and until when (hours, contacts and keys: operations.Administrator)."""

    name: str
    removed: date | None = None


@dataclass
class SecretsInventory:
    path: str
    secrets: list[Secret]
    problems: list[str]


def parse_roster_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def _load_toml(ctx: HostContext, path: str, what: str) -> dict[str, Any]:
    text = ctx.read_optional(path)
    if text is None:
        raise Skip(f"no {what} at {path}")
    return parse_toml(text, path)


def secrets_inventory(ctx: HostContext) -> SecretsInventory:
    """The parsed inventory; Skip when not configured or absent."""

    def compute() -> SecretsInventory:
        configured = ctx.settings.audit.secrets_inventory
        if configured is None:
            raise Skip("no secrets inventory configured (audit.secrets_inventory)")
        path = str(configured)
        doc = _load_toml(ctx, path, "secrets inventory")
        inventory = SecretsInventory(path, [], [])
        for index, entry in enumerate(doc.get("secret") or [], start=1):
            secret = _secret(entry)
            if isinstance(secret, str):
                inventory.problems.append(f"entry {index}: {secret}")
            else:
                inventory.secrets.append(secret)
        return inventory

    return ctx.memo("inventory.secrets", compute)


def _secret(entry: Any) -> Secret | str:
    if not isinstance(entry, dict):
        return "not a table"
    name = str(entry.get("name") or "").strip()
    if not name:
        return "no name"
    rotated = parse_roster_date(entry.get("last_rotated"))
    if rotated is None:
        return f"{name}: last_rotated missing or not a date"
    max_age = entry.get("max_age_days")
    if not isinstance(max_age, int) or max_age <= 0:
        return f"{name}: max_age_days missing or not a positive integer"
    return Secret(
        name,
        str(entry.get("location") or ""),
        str(entry.get("owner") or ""),
        rotated,
        max_age,
    )


def roster_document(ctx: HostContext) -> dict[str, Any]:
    """The roster file, parsed once per audit for every area reading it; Skip when absent.

    Each area takes its own view: operations counts the current administrators' hours,
    secrets asks who ever had access (former administrators included).
    """

    def load() -> dict[str, Any]:
        configured = ctx.settings.audit.roster_file
        if configured is None:
            raise Skip("no administrator roster configured (audit.roster_file)")
        return _load_toml(ctx, str(configured), "administrator roster")

    return ctx.memo("inventory.roster-document", load)


def roster(ctx: HostContext) -> list[Admin]:
    """Every administrator in the roster, current and former; Skip when absent."""

    def compute() -> list[Admin]:
        doc = roster_document(ctx)
        entries = [
            entry
            for table in ROSTER_TABLES
            if isinstance(doc.get(table), list)
            for entry in doc[table]
        ]
        return [
            Admin(str(entry["name"]), parse_roster_date(entry.get("removed")))
            for entry in entries
            if isinstance(entry, dict) and entry.get("name")
        ]

    return ctx.memo("inventory.roster", compute)
