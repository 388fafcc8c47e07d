"""Record formats: Bills lines, delphi <<markers>>, pairs; windows around each maximum;
diverse example selection; corpus text neutralised in every format."""

from __future__ import annotations

import re

from autolabel import prompting
from autolabel.prompting import (
    format_compact,
    format_records,
    normalise,
    sanitize_token,
    select_examples,
)
from autolabel.prompting.compact import delphi_line, pairs_line
from tests.prompting.test_render import months


def test_normalise_scales_to_0_10() -> None:
    assert normalise([0.0, 1.0, 2.0, 4.0, -3.0], 4.0) == [0, 3, 5, 10, 0]
    assert normalise([5.0, 10.0], 2.0) == [10, 10]  # clamped
    assert normalise([1.0, 2.0], 0.0) == [0, 0]
    assert normalise([float("nan"), 1.0], 1.0) == [0, 10]


def test_bills_records_are_token_tab_int_lines() -> None:
    recs = format_records(months())
    assert recs.scale == 4.0
    lines = recs.records[0].lines
    assert lines[4] == " May\t10" and lines[3] == " 3\t1"
    assert recs.records[1].lines[1] == " July\t8"
    assert all(re.fullmatch(r"[^\t\n]*\t(10|\d)", ln) for r in recs.records for ln in r.lines)


def test_bills_contexts_are_capped() -> None:
    long = [(["tok"] * 200, [0.0] * 150 + [5.0] + [0.0] * 49)] * 20
    recs = format_records(long, max_examples=10, max_context_tokens=64, max_total_tokens=300)
    assert len(recs.records) <= 10 and recs.n_tokens <= 300
    assert all(len(r.lines) <= 64 for r in recs.records)
    assert any(ln.endswith("\t10") for ln in recs.records[0].lines)  # the peak stays in view
    assert len(sanitize_token("x" * 500)) == prompting.MAX_TOKEN_CHARS
    assert len(format_records([([], []), (["a"], [1.0])]).records) == 1  # empty one skipped


def test_delphi_marks_runs_of_activating_tokens() -> None:
    tokens = ["The", " New", " York", " Times", " said", " so", "."]
    assert delphi_line(tokens, [0, 6, 10, 0, 0, 3, 0]) == "The <<New York>> Times said <<so>>."
    assert delphi_line([" in", " May"], [0, 10]) == "in <<May>>"  # space outside the marker
    assert delphi_line(["May", " 3"], [10, 0]) == "<<May>> 3"
    assert delphi_line(["a", "b"], [0, 0]) == "ab"


def test_pairs_show_activating_tokens_only_with_values() -> None:
    tokens = ["The", " New", " York", " Times", ' "q"']
    assert pairs_line(tokens, [0, 6, 10, 0, 2]) == '"New" (6), "York" (10), "\\"q\\"" (2)'
    compact = format_compact(months(), "pairs")
    assert compact.lines == ['"3" (1), "May" (10)', '"July" (8)']


def test_compact_window_is_cut_around_the_maximum() -> None:
    tokens = [f" w{i}" for i in range(64)]
    acts = [0.0] * 64
    acts[50], acts[5] = 4.0, 1.0  # the early weak activation falls outside the window
    [line] = format_compact([(tokens, acts)], "delphi", window=16).lines
    shown = line.split()
    assert len(shown) == 16 and "<<w50>>" in shown and "w5" not in shown
    assert shown.index("<<w50>>") == 12  # three quarters of the window before the peak
    assert format_compact([(tokens[:10], acts[:10])], "delphi", window=16).lines == [
        "w0 w1 w2 w3 w4 <<w5>> w6 w7 w8 w9"]


def test_compact_scale_is_the_shown_maximum() -> None:
    compact = format_compact(months(), "delphi")
    assert compact.scale == 4.0 and compact.lines[0] == "We met on <<3 May>> at home."
    assert compact.n_tokens == 16


def test_selection_prefers_variety_and_drops_silent_examples() -> None:
    same = [([" x", " among"], [0.0, 5.0 - i * 0.1]) for i in range(6)]
    same = [([f" c{i}", *toks[1:]], acts) for i, (toks, acts) in enumerate(same)]
    other = [([" y", " with"], [0.0, 2.0]), ([" z", " from"], [0.0, 1.0])]
    silent = [([" q"], [0.0])]
    picked = select_examples(same + other + silent, 4)
    peaks = [toks[-1] for toks, _ in picked]
    assert peaks.count(" among") == 2 and " with" in peaks and " from" in peaks
    assert all(max(a) > 0 for _, a in picked)
    assert len(select_examples(same, 4)) == 4  # variety ran out: the strongest rest fill up
    dupes = [([" a", " b"], [1.0, 2.0])] * 3
    assert len(select_examples(dupes, 3, max_same=3)) == 3  # duplicates only as a last resort
    assert select_examples(dupes, 3, max_same=3)[0] == dupes[0]


def test_compact_formats_neutralise_corpus_text() -> None:
    tokens = ["<<", "x", ">>", "{{ 7*7 }}", "\n", "<start_of_turn>", "\u202e", '"']
    acts = [1.0] * len(tokens)
    for style in ("delphi", "pairs"):
        [line] = format_compact([(tokens, acts)], style).lines
        assert "\n" not in line and "{{" not in line and "<start_of_turn>" not in line
        assert "\u202e" not in line and "\\u202e" in line
        if style == "delphi":  # the only markers are ours: one run, one pair
            assert line.count("<<") == 1 and line.count(">>") == 1
            assert line.startswith("<<‹‹x››")
        else:
            assert re.fullmatch(r'("(?:[^"\\]|\\.)*" \(\d+\)(, )?)+', line)
