"""`sbtc-ops chain aggregate-key` / `chain signer-data`: the sbtc-registry, read on chain.

Every endpoint is reported. Exit 0 when the answering endpoints agree (failures of the
others are shown as warnings), 1 when they disagree, 2 when none answered.

Services are imported inside the commands: see the package docstring (startup cost).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sbtc_ops.cli import _common
from sbtc_ops.errors import DependencyError

if TYPE_CHECKING:
    from sbtc_ops.config import Settings
    from sbtc_ops.stacks import Reading

chain_app = typer.Typer(help="Read the sBTC registry contract on chain.", no_args_is_help=True)

NetworkOption = Annotated[
    str | None,
    typer.Option(
        "--network",
        metavar="NETWORK",
        help="mainnet, testnet or devnet (default: from configuration).",
    ),
]
StacksUrlOption = Annotated[
    list[str] | None,
    typer.Option(
        "--stacks-url",
        metavar="URL",
        help="Stacks node RPC URL to read from; repeat for several "
        "(default: the configured endpoints).",
    ),
]


def _settings(network: str | None, stacks_urls: list[str] | None) -> Settings:
    stacks = {"endpoints": list(stacks_urls)} if stacks_urls else None
    settings: Settings = _common.load_settings(network=network, stacks=stacks)
    return settings


@chain_app.command("aggregate-key")
def aggregate_key(
    network: NetworkOption = None,
    stacks_url: StacksUrlOption = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """The registry's current aggregate key (get-current-aggregate-pubkey), per endpoint."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.stacks import NOT_SET, read_aggregate_key

    settings = _settings(network, stacks_url)
    reading = read_aggregate_key(settings)

    def show(raw: bytes) -> str:
        return "no aggregate key set yet (0x00)" if raw == NOT_SET else raw.hex()

    def as_json(raw: bytes | None) -> dict[str, Any]:
        key = raw if raw is not None and raw != NOT_SET else None
        return {"aggregate_key": key.hex() if key else None, "not_set": raw == NOT_SET}

    _report(settings, reading, show, show, as_json, json_output)


@chain_app.command("signer-data")
def signer_data(
    network: NetworkOption = None,
    stacks_url: StacksUrlOption = None,
    json_output: Annotated[bool, _common.JSON_OPTION] = False,
) -> None:
    """The registry's current signer data (get-current-signer-data), per endpoint."""
    json_output = _common.set_json_mode(json_output)
    from sbtc_ops.stacks import SignerData, read_signer_data

    settings = _settings(network, stacks_url)
    reading = read_signer_data(settings)

    def show(data: SignerData) -> str:
        key = data.aggregate_key.hex() if data.aggregate_key else "no aggregate key set yet"
        lines = [
            f"aggregate key: {key}",
            f"threshold: {data.threshold}" + (" (not set)" if data.threshold == 0 else ""),
            f"signer principal: {data.principal}",
            f"signer set ({len(data.signer_set)}):",
            *[f"  {member.hex()}" for member in data.signer_set],
        ]
        return "\n    ".join(lines)

    def summary(data: SignerData) -> str:
        key = data.aggregate_key.hex() if data.aggregate_key else "not set"
        return (
            f"aggregate key {key}, threshold {data.threshold}, principal {data.principal}, "
            f"signer set of {len(data.signer_set)}: "
            + (", ".join(member.hex()[:16] + "…" for member in data.signer_set) or "empty")
        )

    def as_json(data: SignerData | None) -> dict[str, Any]:
        return {"signer_data": data.to_json() if data else None}

    _report(settings, reading, show, summary, as_json, json_output)


def _report(
    settings: Settings,
    reading: Reading[Any],
    show: Callable[[Any], str],
    summary: Callable[[Any], str],
    as_json: Callable[[Any], dict[str, Any]],
    json_output: bool,
) -> None:
    """Render a reading and set the exit code: 0 agree, 1 disagree, 2 nothing answered."""
    if reading.all_failed:
        status = "unreachable"
    elif reading.disagree:
        status = "disagree"
    else:
        status = "not-set" if getattr(reading, "not_set", False) else "agree"
    if json_output:
        _common.emit_json(_document(settings, reading, status, as_json))
    elif not reading.all_failed:
        _print_outcomes(settings, reading, show)
    if reading.all_failed:
        errors = "\n".join(f"  {o.display_url}: {o.error}" for o in reading.outcomes)
        message = f"no Stacks endpoint answered {reading.function}:\n{errors}"
        if json_output:
            _common.err.print(f"error: {message}", markup=False)
            raise typer.Exit(2)
        raise DependencyError(message)
    for outcome in reading.failed:
        _common.err.print(
            f"warning: {outcome.display_url} did not answer: {outcome.error}", markup=False
        )
    if reading.disagree:
        values = "\n".join(f"  {o.display_url}: {summary(o.value)}" for o in reading.succeeded)
        _common.err.print(f"error: the endpoints disagree:\n{values}", markup=False)
        raise typer.Exit(1)


def _print_outcomes(settings: Settings, reading: Reading[Any], show: Callable[[Any], str]) -> None:
    _common.out.print(
        f"sbtc-registry {reading.function} ({settings.network}, deployer "
        f"{settings.effective_deployer})",
        markup=False,
    )
    for outcome in reading.outcomes:
        shown = show(outcome.value) if outcome.ok else f"error: {outcome.error}"
        _common.out.print(f"  {outcome.display_url}\n    {shown}", markup=False)
    if not reading.disagree:
        _common.out.print(
            f"{len(reading.succeeded)} of {len(reading.outcomes)} endpoints answered and agree",
            markup=False,
        )


def _document(
    settings: Settings, reading: Reading[Any], status: str, as_json: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    return {
        "ok": status in ("agree", "not-set"),
        "status": status,
        "network": settings.network,
        "deployer": settings.effective_deployer,
        "contract": "sbtc-registry",
        "function": reading.function,
        **as_json(reading.agreed),
        "endpoints": [
            {
                "url": outcome.display_url,
                "ok": outcome.ok,
                "error": outcome.error,
                **as_json(outcome.value if outcome.ok else None),
                "result": outcome.clarity.to_hex() if outcome.clarity is not None else None,
                "elapsed_s": round(outcome.elapsed_s, 3),
            }
            for outcome in reading.outcomes
        ],
    }


def register(app: typer.Typer) -> None:
    app.add_typer(chain_app, name="chain")
