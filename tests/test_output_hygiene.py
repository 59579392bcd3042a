"""Output hygiene (issue 20, item 6): data never controls the terminal.

Hostile object names, a server message quoted in `restore.complete`, a backup path, a
manifest's id, history entries: no raw ESC or other C0/C1 control (nor a bidi override)
reaches stdout or stderr, piped or on a terminal (stderr on a pty, stdout forced to the
terminal path with FORCE_COLOR), and the data is still shown, escaped (`\\x1b`). The escaping
is done once, by render.SafeConsole and the escaping stdout/stderr (sbtc_ops.termsafe).
A manifest id must be a whole backup id.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sbtc_ops.backup.ids import is_backup_id
from sbtc_ops.backup.manifest import MANIFEST_NAME
from sbtc_ops.render import CheckLine, SafeConsole, render_checks
from sbtc_ops.results import Status
from sbtc_ops.termsafe import EscapingStream, Rendered, escape_controls
from tests.support.backup import write_fake_backups
from tests.support.cli import clean_env, run_cli
from tests.support.hostile import pg_dump, plain_with
from tests.support.pg import SourceServer, new_signer_database
from tests.support.terminal import run_on_terminal
from tests.support.verify import FAST_CHAIN_ENV, private_tmpdir

# Clear the screen, paint a fake green verdict, set the window title, ring, CSI as one C1
# byte, and reverse what follows (a bidi override).
HOSTILE = "evil\x1b[2J\x1b[32mverdict: match\x1b]0;pwned\x07\x9b31m\u202ereversed"
# On a terminal, Rich's own sequences are the only ones allowed: colours (SGR), and for the
# live display carriage return, erase line, cursor up, hide/show cursor.
_RICH = re.compile(r"\x1b\[[0-9;]*m|\r|\x1b\[2K|\x1b\[[0-9]*A|\x1b\[\?25[lh]")
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def assert_no_raw_controls(text: str, *, terminal: bool = False) -> None:
    shown = _RICH.sub("", text) if terminal else text
    found = _FORBIDDEN.search(shown)
    assert found is None, f"raw {found.group(0)!r} in output: {text[-1500:]!r}"
    for piece in ("\x1b[2J", "\x1b]0;", "\x9b", "\u202e", "\x1b[32mverdict"):
        assert piece not in text, f"raw {piece!r} in output"


# -- units ------------------------------------------------------------------------------------


def test_escape_controls_makes_every_control_visible() -> None:
    assert escape_controls("a\x1b[2Jb\tc\nd\re\x9b\u202e") == "a\\x1b[2Jb\tc\nd\\x0de\\x9b\\u202e"
    assert escape_controls("one\nline", keep_newlines=False) == "one\\x0aline"


@pytest.mark.parametrize("force_terminal", [True, False])
def test_safe_console_escapes_data_in_every_renderable(force_terminal: bool) -> None:
    buffer = io.StringIO()
    console = SafeConsole(file=buffer, force_terminal=force_terminal, width=200)
    render_checks(
        console,
        [
            (
                f"heading {HOSTILE}",
                [CheckLine(Status.FAIL, f"id{HOSTILE}", f"text {HOSTILE}", f"fix {HOSTILE}")],
            )
        ],
    )
    console.print(f"[bold]{HOSTILE}[/]")  # markup around data
    output = buffer.getvalue()
    assert_no_raw_controls(output, terminal=force_terminal)
    assert "\\x1b[2J" in output and "\\u202e" in output
    assert ("\x1b[" in output) is force_terminal  # styling still reaches a terminal


def test_escaping_stream_passes_rendered_output_and_escapes_the_rest() -> None:
    sink = io.StringIO()
    stream = EscapingStream(sink)
    stream.write(Rendered("\x1b[1mstyled by the console\x1b[0m\n"))
    stream.write(f"printed {HOSTILE.replace(chr(27) + '[32m', '')}\n")
    stream.write("\x1b[1mtyper's help colour\x1b[0m\n")
    lines = sink.getvalue().splitlines()
    assert lines[0] == "\x1b[1mstyled by the console\x1b[0m"
    # Outside SafeConsole (print, click, logging) only a colour change would pass whole.
    assert_no_raw_controls(lines[1])
    assert lines[2] == "\x1b[1mtyper's help colour\x1b[0m"


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("20261124T220102Z", True),
        ("20261124T220102Z-dkg", True),
        ("20261124T220102Z\n", False),
        ("20261124T220102Z-" + "a" * 17, False),
        ("20261124T220102Z-dkg\x1b[2J", False),
        ("x20261124T220102Z", False),
        ("\u0662" * 8 + "T220102Z", False),  # other scripts' digits
    ],
)
def test_backup_id_must_match_whole(text: str, valid: bool) -> None:
    assert is_backup_id(text) is valid


def test_a_manifest_id_that_is_no_backup_id_makes_it_invalid_and_is_shown_escaped(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    good, bad = "20260101T000000Z", "20260102T000000Z"
    write_fake_backups(repo, [good, bad])
    manifest = json.loads((repo / bad / MANIFEST_NAME).read_text())
    manifest["id"] = f"{bad}\n{HOSTILE}"
    (repo / bad / MANIFEST_NAME).write_text(json.dumps(manifest))
    env = clean_env(tmp_path / "state")
    listed = run_cli("backups", "--repo", str(repo), "--json", cwd=tmp_path, env=env)
    states = {row["id"]: row["state"] for row in listed.json()["backups"]}
    assert states == {good: "complete", bad: "invalid"}
    human = run_cli("backups", "--repo", str(repo), cwd=tmp_path, env=env)
    assert "not a valid sbtc-ops manifest" in human.stderr
    assert_no_raw_controls(human.stdout + human.stderr)
    shown = run_on_terminal(
        "backups", "--repo", str(repo), cwd=tmp_path, state_dir=tmp_path / "state"
    )
    assert_no_raw_controls(shown.stdout + shown.screen, terminal=True)


# -- the real CLI on a hostile archive ----------------------------------------------------------


@dataclass
class Hostile:
    root: Path
    archive: Path  # its file name, too, is hostile
    key: str


@pytest.fixture(scope="module")
def hostile(
    source_server: SourceServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hygiene")
    _, facts = new_signer_database(source_server, target_mb=0.1, seed=22, dbname="hygiene")
    clean = pg_dump(source_server, "hygiene", root / "clean.sql", "p")
    name = HOSTILE.replace("\x07", "")  # a quoted identifier may hold anything but NUL
    literal = "chr(27) || '[2J' || chr(27) || ']0;pwned' || chr(7) || chr(155) || 'x'"
    statements = "\n".join(
        [
            f'CREATE TABLE public."{name}" (x int);',
            f"DO $do$BEGIN RAISE EXCEPTION '%', 'boom ' || {literal}; END$do$;",
        ]
    )
    directory = root / f"dir{HOSTILE.replace('/', '')}"
    directory.mkdir()
    archive = plain_with(clean, directory / "dump.sql", statements)
    yield Hostile(root, archive, facts.newest_verified_key.hex())


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_hostile_names_and_messages_never_reach_the_terminal_raw(hostile: Hostile) -> None:
    state = hostile.root / "state"
    tmpdir = private_tmpdir()
    env = {"TMPDIR": str(tmpdir), **FAST_CHAIN_ENV}
    args = ("verify", str(hostile.archive), "--expected-key", hostile.key)
    piped = run_cli(*args, cwd=hostile.root, env=clean_env(state, env), timeout=240)
    assert piped.code == 1, piped.stderr
    assert_no_raw_controls(piped.stdout + piped.stderr)
    # The data is still there, made visible.
    assert "\\x1b[2J" in piped.stdout and "boom" in piped.stdout, piped.stdout
    as_json = run_cli(*args, "--json", cwd=hostile.root, env=clean_env(state, env), timeout=240)
    assert json.loads(as_json.stdout)["verdict"] in ("tampered", "corrupt")
    assert_no_raw_controls(as_json.stdout + as_json.stderr)
    # stderr on a terminal, stdout forced onto the terminal path (colours).
    shown = run_on_terminal(
        *args, cwd=hostile.root, state_dir=state, env={**env, "FORCE_COLOR": "1"}
    )
    assert shown.code == 1
    assert "\x1b[" in shown.stdout  # the terminal path was taken
    assert_no_raw_controls(shown.stdout + shown.screen, terminal=True)
    history = run_cli("history", cwd=hostile.root, env=clean_env(state, env))
    assert history.code == 0, history.stderr
    assert "\\x1b[2J" in history.stdout  # the hostile path, escaped
    assert_no_raw_controls(history.stdout + history.stderr)
