"""Labels with their verdicts where people read them (issue 13.5): `features list`, `features
show` and `stats` stay readable at 80 columns — nothing cut ("…"), every verdict visible."""

from __future__ import annotations

from rich.console import Console

from autolabel import db as dbm
from autolabel.store.labels import Label
from autolabel.views import features_table, label_panel, stats_table

LONG = ("the 0th month of the year in dates written out in full, such as January, February "
        "and March, mostly inside citations")


def label(fid: int, verdict: str, text: str | None = "months of the year",
          selected_on: str = "validation", score: float | None = 0.412) -> Label:
    return Label(fid, fid if text else None, text, "llm", "gemma", "simulation",
                 "embedding:all-MiniLM-L6-v2", score, -0.031 if score is not None else None,
                 0.08, 0.30, 0.51, verdict, selected_on, 0.4)


def render(renderable: object) -> str:
    console = Console(width=80, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def check_fits(text: str) -> None:
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text


def test_features_list_shows_label_score_floor_and_verdict_at_80_columns() -> None:
    sae = dbm.SAERecord(name="default", hook_name="blocks.6.hook_resid_post", d_sae=16384)
    feats = [dbm.Feature(id=i + 1, index=i, density=0.0123, max_activation=12.5)
             for i in range(5)]
    labels = {1: label(1, "trusted"), 2: label(2, "weak", LONG), 3: label(3, "at_floor"),
              4: label(4, "rejected", None, "", None), 5: label(5, "unscored", score=None)}
    text = render(features_table(sae, feats, 64, labels))
    check_fits(text)
    for verdict in ("trusted", "weak", "at_floor", "rejected", "unscored"):
        assert verdict in text
    assert "0.412 (-0.031)" in text
    assert "all candidates rejected" in text
    assert "January, February" in " ".join(text.split())  # the long label folds, whole
    assert "*" not in text  # nothing was chosen on test


def test_labels_chosen_on_test_are_marked_wherever_shown() -> None:
    sae = dbm.SAERecord(name="default", hook_name="h", d_sae=16)
    feats = [dbm.Feature(id=1, index=0, density=0.5, max_activation=1.0)]
    legacy = label(1, "weak", selected_on="test")
    listed = render(features_table(sae, feats, 1, {1: legacy}))
    check_fits(listed)
    assert "weak*" in listed and "chosen on the test split" in listed
    shown = render(label_panel(legacy))
    check_fits(shown)
    assert "TEST split" in shown and "re-collect" in shown


def test_features_show_label_panel_gives_the_evidence() -> None:
    shown = render(label_panel(label(1, "trusted", LONG)))
    check_fits(shown)
    for part in ("trusted", "0.412 (-0.031)", "0.300 to 0.510", "0.080", "validation split"):
        assert part in shown, part


def test_stats_show_trusted_shares_per_explainer_and_scorer_at_80_columns() -> None:
    rows = [{"sae": "default", "explainer": explainer, "scorer": "simulation",
             "simulator": "embedding:all-MiniLM-L6-v2", "n": 64, "n_valid": 60, "mean": 0.21,
             "median": 0.2, "p25": 0.1, "p75": 0.3, "floor_mean": 0.02, "above_floor": 0.81,
             "trusted": 0.25, "labels": 40, "labels_trusted": 12,
             "verdicts": {"trusted": 16, "weak": 20, "at_floor": 28}}
            for explainer in ("tokens", "llm")]
    text = render(stats_table(rows))
    check_fits(text)
    assert "trusted" in text and "labels" in text and "12/40" in text and "25%" in text


def test_features_show_candidates_table_folds_instead_of_cutting() -> None:
    from autolabel.views import explanations_table

    scores = [{"scorer": "simulation", "simulator": "embedding:all-MiniLM-L6-v2", "value": 0.571,
               "floor": 0.14, "status": "ok", "n": 40, "validation": 0.55, "null_p95": 0.05,
               "ci_low": 0.48, "ci_high": 0.64, "verdict": "trusted"}]
    expls = [{"id": 1, "explainer": "tokens", "llm_model": "", "prompt_hash": "d07ede584c1d",
              "candidate": 0, "status": "ok", "text": LONG, "error": None, "reason": None,
              "is_best": True, "scores": scores},
             {"id": 2, "explainer": "llm", "llm_model": "gemma-3-270m", "prompt_hash": "90f6",
              "candidate": 0, "status": "rejected", "text": None, "error": "loop: 'the month'",
              "reason": "loop", "is_best": False, "scores": []}]
    text = render(explanations_table(expls))
    check_fits(text)
    for part in ("0.571", "(0.140)", "trusted", "0.550", "rejected", "loop"):
        assert part in text, part
