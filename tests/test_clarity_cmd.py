"""`sbtc-ops clarity decode`, run as the real console script."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.support.cli import CliResult

PAGE_EXAMPLE = "0x020000002103d8c4344861fc7590fd812c24884a3bfd9374d8ba865a787ff53c9060020aa967"
PAGE_KEY = "0x03d8c4344861fc7590fd812c24884a3bfd9374d8ba865a787ff53c9060020aa967"

Cli = Callable[..., CliResult]


def test_page_example_prints_the_key(cli: Cli) -> None:
    result = cli("clarity", "decode", PAGE_EXAMPLE)
    assert result.code == 0, result.stderr
    assert result.stdout == PAGE_KEY + "\n"


def test_without_prefix_and_from_stdin(cli: Cli) -> None:
    assert cli("clarity", "decode", PAGE_EXAMPLE[2:]).stdout == PAGE_KEY + "\n"
    assert cli("clarity", "decode", input_text=PAGE_EXAMPLE + "\n").stdout == PAGE_KEY + "\n"
    assert cli("clarity", "decode", "-", input_text=PAGE_EXAMPLE).stdout == PAGE_KEY + "\n"


def test_a_whole_call_read_answer_can_be_piped_in(cli: Cli) -> None:
    answer = json.dumps({"okay": True, "result": PAGE_EXAMPLE})
    result = cli("clarity", "decode", input_text=answer)
    assert result.code == 0, result.stderr
    assert result.stdout == PAGE_KEY + "\n"


def test_nested_value_text_form(cli: Cli) -> None:
    result = cli("clarity", "decode", "0x0c000000020362617a0906666f6f62617203")
    assert result.stdout.strip() == "(tuple (baz none) (foobar true))"


def test_json_output_is_one_typed_document(cli: Cli) -> None:
    result = cli("clarity", "decode", "--json", PAGE_EXAMPLE)
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["value"] == {"type": "buffer", "value": PAGE_KEY}
    assert document["text"] == PAGE_KEY
    assert document["type"] == "(buff 33)"
    assert document["hex"] == PAGE_EXAMPLE


def test_okay_false_answer_reports_the_cause(cli: Cli) -> None:
    answer = '{"okay":false,"cause":"Unchecked(NoSuchContract(\\"SP000.sbtc-registry\\"))"}'
    result = cli("clarity", "decode", input_text=answer)
    assert result.code == 2
    assert "okay:false" in result.stderr and "NoSuchContract" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("argument", "fragment"),
    [
        ("0x0200000021ff", "buffer length 33 goes beyond the end of the input"),
        ("0x0300", "1 trailing bytes after the value (at byte 1)"),
        ("0x1f", "invalid type id 0x1f (at byte 0)"),
        ("0xzz", "not hex"),
        ("0x0d000000010a07", "1 trailing bytes"),
        ("0x0d0000000107", "byte 0x07 is not printable ASCII (at byte 5)"),
    ],
)
def test_invalid_input_exits_2_with_the_codecs_message(
    cli: Cli, argument: str, fragment: str
) -> None:
    result = cli("clarity", "decode", argument)
    assert result.code == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_invalid_input_with_json_gives_one_error_document(cli: Cli) -> None:
    result = cli("clarity", "decode", "--json", "0x0300")
    assert result.code == 2
    document = result.json()
    assert document["ok"] is False and "trailing" in document["error"]


def test_empty_stdin_is_a_usage_error(cli: Cli) -> None:
    result = cli("clarity", "decode", input_text="")
    assert result.code == 2
    assert "no input" in result.stderr
