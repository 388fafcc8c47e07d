"""Builders for the search tests: rows added one transaction each, and result shorthands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from autolabel.db import Audit, Database, Explanation, Feature, Flag, SAERecord, Score
from autolabel.embed import HashEmbedder
from autolabel.hashing import content_hash

HASH = HashEmbedder()

NASTY = [
    '"unbalanced quote', "NEAR(months year, 2)", "-months", "text:months", "sae : gemma",
    "month*", "months AND OR NOT", "))) (((", "'; DROP TABLE explanations; --", "^months",
    "{text} : months", "months + year", "__init__", "", " ", "😀 months 😀", "ÉTÉ månad",
    "a" * 5000, "NEAR", "AND", "\x00months",
]


def add_sae(database: Database, name: str, layer: int | None = 6) -> int:
    with database.session() as s:
        sae = SAERecord(name=name, source="test", hook_name=f"blocks.{layer}.hook_resid_post",
                        layer=layer, d_in=16, d_sae=4096, architecture="topk",
                        content_hash=content_hash(name))
        s.add(sae)
        s.flush()
        return sae.id


def add_feature(database: Database, sae_id: int, index: int, density: float = 0.01) -> int:
    with database.session() as s:
        feature = Feature(sae_id=sae_id, index=index, density=density)
        s.add(feature)
        s.flush()
        return feature.id


def add_explanation(database: Database, feature_id: int, body: str | None, *,
                    explainer: str = "llm", status: str = "ok", candidate: int = 0) -> int:
    with database.session() as s:
        exp = Explanation(feature_id=feature_id, explainer=explainer, text=body, status=status,
                          candidate=candidate)
        s.add(exp)
        s.flush()
        return exp.id


def add_legacy_explanation(database: Database, feature_id: int, body: str | None, *,
                           status: str = "ok", candidate: int = 0) -> int:
    """An explanation row written with the columns of migration 0001 only (for databases held
    at an old revision, where the ORM model has columns the table does not)."""
    with database.engine.begin() as conn:
        result = conn.execute(text(
            "INSERT INTO explanations (feature_id, explainer, llm_model, prompt_hash, candidate,"
            " text, status, settings, is_best, created_at)"
            " VALUES (:f, 'llm', '', '', :c, :t, :s, '{}', 0, '2026-01-01')"),
            {"f": feature_id, "c": candidate, "t": body, "s": status})
        return int(result.lastrowid or 0)


def add_score(database: Database, explanation_id: int, value: float, floor: float,
              scorer: str = "simulation") -> None:
    with database.session() as s:
        s.add(Score(explanation_id=explanation_id, scorer=scorer, value=value,
                    floor_value=floor))


def add_flag(database: Database, sae_id: int, feature_id: int, category: str) -> None:
    with database.session() as s:
        audit = Audit(sae_id=sae_id, config_hash="x", pairs="builtin")
        s.add(audit)
        s.flush()
        s.add(Flag(audit_id=audit.id, feature_id=feature_id, category=category, tier=1))


def refs(hits: Sequence[Any]) -> list[str]:
    return [h.feature for h in hits]


def fts_rows(database: Database) -> dict[int, str]:
    with database.engine.connect() as conn:
        return dict(conn.execute(text("SELECT rowid, text FROM search_fts")).all())
