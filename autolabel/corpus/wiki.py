"""Wikipedia markup stripping: wikitext in, plain prose paragraphs out.

Used for the ``wikipedia-sample`` built-in corpus, whose articles are raw wikitext; kept apart
from the readers so the text cleaning can be tested (and tuned) on its own.
"""

from __future__ import annotations

import re

# Sections after which a Wikipedia article is only citations and link lists.
_WIKI_TAIL_SECTIONS = re.compile(
    r"^==+\s*(See also|References|External links|Notes|Further reading|Bibliography|Sources|"
    r"Footnotes|Citations|Notes and references)\s*==+\s*$",
    re.MULTILINE | re.IGNORECASE,
)
_WIKI_TABLE = re.compile(r"\{\|(?:(?!\{\|)[\s\S])*?\|\}")
_WIKI_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.MULTILINE)
_WIKI_LIST_MARK = re.compile(r"^[*#:;]+\s*", re.MULTILINE)
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")
_WIKI_GALLERY = re.compile(r"<gallery[^>]*>[\s\S]*?</gallery>", re.IGNORECASE)
_WIKI_FILE_LINE = re.compile(r"^(?:File|Image):.*$", re.MULTILINE | re.IGNORECASE)
_WIKI_IMAGE_OPTION = re.compile(r"\|(?:thumb|left|right|center|upright|\d+(?:x\d+)?px|alt=[^|\n]*)")


def strip_wiki_markup(raw: str) -> str:
    """Turn wikitext into plain prose paragraphs.

    Tables, galleries and the trailing citation/link sections are dropped (not prose);
    gensim's ``filter_wiki`` removes templates, refs, files, categories and keeps link text; the
    rest (bold/italic quotes, heading and list markers, empty parentheses left by removed
    templates, runs of blank lines) is tidied here.
    """
    from gensim.corpora.wikicorpus import filter_wiki  # heavy (~1 s import): only when used

    tail = _WIKI_TAIL_SECTIONS.search(raw)
    text = raw[: tail.start()] if tail else raw
    text = _remove_tables(_WIKI_GALLERY.sub("", text))
    text = filter_wiki(text)
    text = _WIKI_IMAGE_OPTION.sub("", _WIKI_FILE_LINE.sub("", text))
    text = text.replace("'''", "").replace("''", "")
    text = _WIKI_HEADING.sub(r"\1", text)
    text = _WIKI_LIST_MARK.sub("", text)
    text = _EMPTY_PARENS.sub("", text)
    for leftover in ("{{", "}}", "[[", "]]", "{|", "|}"):
        text = text.replace(leftover, "")
    return _tidy_whitespace(text)


def _remove_tables(text: str) -> str:
    """Remove ``{| ... |}`` tables, innermost first, since tables nest."""
    while True:
        new = _WIKI_TABLE.sub("", text)
        if new == text:
            return new
        text = new


def _tidy_whitespace(text: str) -> str:
    """Strip each line, collapse inner space runs and keep at most one blank line in a row."""
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    lines = [re.sub(r" ([,.;:])", r"\1", line) for line in lines]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()
