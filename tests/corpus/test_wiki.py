"""Wikipedia markup stripping: templates, links, tables and reference sections go."""

from __future__ import annotations

from autolabel.corpus import strip_wiki_markup


def test_strip_wiki_markup() -> None:
    raw = (
        "'''Foo''' is a [[bar|baz]] {{cite|x}} thing<ref>note</ref>.\n"
        "== History ==\n* item one\n{| class=wikitable\n| a || b\n|}\n"
        "[[File:x.jpg|thumb|A caption]]\nEnd.\n== References ==\n* junk"
    )
    text = strip_wiki_markup(raw)
    assert "Foo is a baz thing." in text
    assert "History\nitem one" in text
    assert "junk" not in text and "wikitable" not in text
    assert "[[" not in text and "{{" not in text and "'''" not in text
