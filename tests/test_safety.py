"""Untrusted text made inert: control characters visible, spreadsheet formulas neutralised,
credentials out of URLs."""

from __future__ import annotations

import pytest

from autolabel.safety import csv_cell, redact_url, visible

HOSTILE = "\x1b]0;TERMPWNED\x07\x1b[31mANSIRED\x1b[0m"


def test_escape_sequences_become_visible() -> None:
    shown = visible(HOSTILE)
    assert "\x1b" not in shown and "\x07" not in shown
    assert shown == "␛]0;TERMPWNED\\x07␛[31mANSIRED␛[0m"


@pytest.mark.parametrize("char", ["\x00", "\x08", "\x7f", "\x9b", "\u202e", "\u2066"])
def test_every_control_class_is_escaped(char: str) -> None:
    assert char not in visible(f"a{char}b")


def test_printable_text_is_unchanged() -> None:
    text = "café — naïve «quotes» 日本語 [bold]not markup[/bold]"
    assert visible(text) == text
    assert visible("line\nnext\ttab") == "line⏎next⇥tab"


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://evil.example","click")+cmd|calc',
                                  "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_neutralised(cell: str) -> None:
    assert csv_cell(cell) == "'" + cell


def test_plain_cells_and_numbers_pass() -> None:
    assert csv_cell("the word among") == "the word among"
    assert csv_cell(-0.5) == -0.5 and csv_cell(None) is None


def test_redact_url_userinfo() -> None:
    assert redact_url("http://user:PASSWORD@host:8080/v1") == "http://***@host:8080/v1"
    assert redact_url("http://token@host/v1") == "http://***@host/v1"
    assert redact_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
