"""Verdicts in search: rejected labels never shown by default, a verdict filter, and ordering
that prefers trusted labels at equal relevance (and only then), in every mode and the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from autolabel.cli import cli
from autolabel.db import Database, Score
from autolabel.embed import embed_missing
from autolabel.errors import InputError
from autolabel.search import SearchFilters, parse_verdicts, rrf, search
from autolabel.store.labels import VERDICTS
from tests.search.helpers import HASH, add_explanation, add_feature, add_sae, refs

TEXT = "months of the year"


def _scored(database: Database, explanation_id: int, value: float, verdict: str) -> None:
    """A test-split score with its floor, null, CI and verdict, as the score stage writes."""
    with database.session() as s:
        s.add(Score(explanation_id=explanation_id, scorer="simulation", simulator="sim",
                    value=value, floor_value=0.05, validation_value=value, null_mean=0.0,
                    null_p95=0.1, null_n=16, ci_low=value - 0.1, ci_high=value + 0.1,
                    verdict=verdict, n_examples=10))


@pytest.fixture
def tied(database: Database) -> dict[str, Any]:
    """Four features with the same explanation text (equally relevant to any query), created
    worst verdict first so that id order alone would rank the trusted one last; a fifth whose
    only candidate the quality gate rejected; one less relevant trusted feature."""
    sae = add_sae(database, "v-l6", 6)
    out: dict[str, Any] = {}
    for index, verdict in enumerate(["unscored", "at_floor", "weak", "trusted"], start=1):
        fid = add_feature(database, sae, index)
        eid = add_explanation(database, fid, TEXT)
        if verdict != "unscored":
            _scored(database, eid, {"at_floor": 0.06, "weak": 0.2, "trusted": 0.5}[verdict],
                    verdict)
        out[verdict] = f"v-l6:{index}"
    gated = add_feature(database, sae, 9)
    add_explanation(database, gated, f"{TEXT} {TEXT}", status="rejected")
    out["rejected"] = "v-l6:9"
    far = add_feature(database, sae, 10)
    _scored(database, add_explanation(database, far, f"{TEXT} and many other calendar words"),
            0.7, "trusted")
    out["far"] = "v-l6:10"
    assert embed_missing(database, HASH) == 5  # ok explanations only
    return out


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_equal_relevance_prefers_trusted(database: Database, tied: dict[str, Any],
                                         mode: str) -> None:
    hits = search(database, TEXT, mode=mode, limit=5, embedder=HASH)
    order = [tied[v] for v in ("trusted", "weak", "at_floor", "unscored")]
    assert refs(hits)[:4] == order
    assert [h.verdict for h in hits[:4]] == ["trusted", "weak", "at_floor", "unscored"]
    assert hits[0].score == pytest.approx(0.5) and hits[0].floor == pytest.approx(0.05)
    # Verdicts only break ties: the less relevant trusted feature ranks after all of them.
    assert refs(hits)[4] == tied["far"]
    # The tie reaches across the cut: with room for one, the trusted one is it.
    assert refs(search(database, TEXT, mode=mode, limit=1, embedder=HASH)) == [tied["trusted"]]


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_verdict_filter(database: Database, tied: dict[str, Any], mode: str) -> None:
    def found(verdicts: str) -> list[str]:
        filters = SearchFilters(verdicts=parse_verdicts(verdicts))
        return refs(search(database, TEXT, mode=mode, filters=filters, limit=10, embedder=HASH))

    assert found("trusted") == [tied["trusted"], tied["far"]]
    assert found("weak,at_floor") == [tied["weak"], tied["at_floor"]]
    assert found("unscored") == [tied["unscored"]]
    # A rejected label has no text that search could match: never shown, even when asked for.
    assert found("rejected") == []
    assert tied["rejected"] not in found("all")
    assert len(found("all")) == 5


def test_min_score_combines_with_verdicts(database: Database, tied: dict[str, Any]) -> None:
    filters = SearchFilters(min_score=0.3, verdicts=("trusted", "weak"))
    assert refs(search(database, TEXT, mode="keyword", filters=filters)) == [
        tied["trusted"], tied["far"]]


def test_parse_verdicts() -> None:
    assert parse_verdicts(None) is None and parse_verdicts(" , ") is None
    assert parse_verdicts("Trusted, weak,trusted") == ("trusted", "weak")
    assert parse_verdicts("at floor") == ("at_floor",)
    assert parse_verdicts("all") == VERDICTS
    with pytest.raises(InputError, match="unknown verdict 'great'"):
        parse_verdicts("trusted,great")


def test_rrf_keeps_ties_tied() -> None:
    kw = [(1, 10, 2.0), (2, 20, 2.0), (3, 30, 1.0)]
    sem = [(2, 20, 0.9), (1, 10, 0.9), (3, 30, 0.8)]
    fused = rrf([kw, sem])
    assert fused[0][2] == fused[1][2] == pytest.approx(2 / 61)
    assert fused[2] == (3, 30, pytest.approx(2 / 63))  # after a two-way tie comes rank 3


def test_cli_verdict_option(database: Database, tied: dict[str, Any],
                            runner: CliRunner) -> None:
    db = database.url
    out = runner.invoke(cli, ["--db", db, "--json", "search", TEXT, "--mode", "keyword",
                              "--verdict", "trusted,weak"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["feature"] for r in rows] == [tied["trusted"], tied["weak"], tied["far"]]
    assert [r["verdict"] for r in rows] == ["trusted", "weak", "trusted"]
    default = json.loads(runner.invoke(cli, ["--db", db, "--json", "search", TEXT, "--mode",
                                             "keyword"]).stdout)
    assert [r["feature"] for r in default][:2] == [tied["trusted"], tied["weak"]]
    bad = runner.invoke(cli, ["--db", db, "search", TEXT, "--verdict", "great"])
    assert bad.exit_code != 0 and "unknown verdict 'great'" in bad.output
