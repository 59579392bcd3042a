"""One notation in every command's `--help`: the command tree is restyled once, here.

The convention (click's, and most Unix tools'):

- an option that takes a value shows one placeholder, the same for that option name in every
  command (`--stacks-url URL`, `--identity FILE`), from `OPTION_PLACEHOLDERS`, else the
  placeholder the command declared, else the option's name in capitals;
- a choice shows its values (`--fail-on warn|fail`); a number range is said in words in the
  help text ("at least 1"), not as `[x>=1]`;
- a flag or a counter shows nothing after its name (no `<bool>`, `<int>`);
- an argument is `NAME` when required, `[NAME]` when optional, `NAME...` when repeatable.

Typer renders types (`<list[str]>`) and argument braces (`{BACKUP}`) itself and offers no
public switch for either, so the arguments are given a subclass that renders them the
conventional way. tests/test_help_style.py walks every command's help and fails on any other
notation, including after a typer upgrade that changes these internals.
"""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

HELP_OPTION_NAMES = ["-h", "--help"]

# One placeholder per option name, whatever the command.
OPTION_PLACEHOLDERS = {
    "--bind": "HOST:PORT",
    "--compress": "METHOD:LEVEL",
    "--config": "FILE",
    "--connect-timeout": "SECONDS",
    "--db": "URL",
    "--deadline": "SECONDS",
    "--expected-key": "HEX",
    "--format": "FORMAT",
    "--html": "FILE",
    "--identity": "FILE",
    "--job": "JOB",
    "--keep-at": "FILE",
    "--jobs": "N",
    "--key-fd": "N",
    "--key-file": "FILE",
    "--limit": "N",
    "--metrics-textfile": "FILE",
    "--network": "NETWORK",
    "--once": "JOB",
    "--only": "AREAS",
    "--out": "DIR",
    "--overwrite-live-db": "DBNAME",
    "--passphrase-fd": "N",
    "--probe": "HOST[:PORTS]",
    "--public-key": "HEX",
    "--recipient": "RECIPIENT",
    "--release": "FILE",
    "--repo": "LOCATION",
    "--root": "DIR",
    "--sandbox-user": "USER",
    "--service-user": "USER",
    "--shares": "N",
    "--signer-key-file": "FILE",
    "--stacks-url": "URL",
    "--target-db": "URL",
    "--threshold": "K",
    "--to": "RELEASE",  # upgrade-check; backup locations are --repo
}

# Arguments by parameter name, where the name itself is not the word to show.
ARGUMENT_PLACEHOLDERS = {"backup_ref": "BACKUP", "files": "FILE", "hex_value": "HEX"}


class ConventionalArgument(TyperArgument):
    """An argument shown as `NAME`, `[NAME]` or `NAME...`, with no type column."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        return name if self.required else f"[{name}]"

    def _rich_display_name(self) -> str:
        return self.display_name_raw

    def display_type_rich(self, ctx: object) -> str | None:
        return None


def styled_command(app: typer.Typer) -> typer.core.TyperCommand | TyperGroup:
    """The click command tree of `app`, restyled; call it once per process."""
    command = typer.main.get_command(app)
    for each in walk(command):
        restyle(each)
    return command  # type: ignore[return-value]


def walk(command: object) -> Iterator[typer.core.TyperCommand | TyperGroup]:
    """Every command in the tree, groups included, parents first."""
    yield command  # type: ignore[misc]
    if isinstance(command, TyperGroup):
        for name in sorted(command.commands):
            yield from walk(command.commands[name])


def restyle(command: typer.core.TyperCommand | TyperGroup) -> None:
    for param in command.params:
        if isinstance(param, TyperOption):
            _restyle_option(param)
        elif isinstance(param, TyperArgument):
            _restyle_argument(param)
    # click creates -h/--help lazily; create it now (cached on the command) to restyle it.
    help_option = command.get_help_option(
        typer.Context(command, help_option_names=HELP_OPTION_NAMES)
    )
    if help_option is not None:
        help_option.metavar = ""


def option_placeholder(option: TyperOption) -> str:
    """What follows the option's name in help: '' for flags and counters."""
    if option.is_flag or option.count:
        return ""
    long_name = next((o for o in option.opts if o.startswith("--")), option.opts[0])
    if long_name in OPTION_PLACEHOLDERS:
        return OPTION_PLACEHOLDERS[long_name]
    choices = option.type_descriptor.choices if option.type_descriptor.is_choice else None
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    if option.metavar:
        return option.metavar
    return long_name.lstrip("-").upper().replace("-", "_")


def _restyle_option(option: TyperOption) -> None:
    option.metavar = option_placeholder(option)
    if option.count:
        option.show_default = False  # "[default: 0]" says nothing about -v
    words = _range_words(option.min, option.max)
    if words and not option.count:
        option.help = f"{(option.help or '').rstrip('.')} ({words})."
    # Typer prints min/max as "[x>=1]" beside the placeholder; they are only shown, the
    # validation uses the declared limits, which stay.
    option.min = option.max = None


def _range_words(low: float | None, high: float | None) -> str | None:
    if low is None and high is None:
        return None
    if high is None:
        return f"at least {low:g}"
    if low is None:
        return f"at most {high:g}"
    return f"{low:g} to {high:g}"


def argument_placeholder(argument: TyperArgument) -> str:
    name = ARGUMENT_PLACEHOLDERS.get(argument.name or "")
    if name is None:
        name = (argument.metavar or argument.name or "ARG").strip("[]{}.").upper()
    return name + ("..." if argument.nargs != 1 else "")


def _restyle_argument(argument: TyperArgument) -> None:
    argument.metavar = argument_placeholder(argument)
    argument.__class__ = ConventionalArgument
