"""Making untrusted text inert where people look at it: terminals and spreadsheets.

Corpus text and model output are attacker-controlled. Printed raw, an OSC sequence such as
``ESC ] 0 ; title BEL`` retitles the user's terminal and CSI sequences recolour or move the
cursor; bidirectional overrides reorder what a reviewer reads. In a spreadsheet, a cell that
starts with ``=``, ``+``, ``-``, ``@``, tab or CR is a formula (OWASP's CSV-injection rule).
Every printed or exported piece of such text goes through one of the functions below.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# C0 controls (except none), DEL, C1 controls, and Unicode bidi embedding/override/isolate
# marks: none of them should ever reach a terminal unescaped.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "⏎", "\t": "⇥", "\r": "␍", "\x1b": "␛"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def visible(text: str) -> str:
    """``text`` with every control character made visible: newline as ⏎, tab as ⇥, CR as ␍,
    ESC as ␛, anything else as ``\\xNN`` / ``\\uNNNN``. Printable text is unchanged."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def csv_cell(value: object) -> object:
    """A spreadsheet cell that cannot run as a formula: text starting with ``= + - @``, tab or
    CR gets a leading apostrophe (OWASP). Numbers are left as numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def redact_url(url: str) -> str:
    """A URL safe to store or print: any ``user:password@`` part becomes ``***@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
