"""Search index: full-text over ok explanations, kept in sync by the database itself.

SQLite: an FTS5 table ``search_fts`` (rowid = explanation id; columns text, sae, layer,
feature_index; porter stemming) filled by triggers on ``explanations`` (insert / update / delete)
and on ``saes`` (rename, layer change). PostgreSQL: a stored generated ``tsvector`` column
``explanations.search_tsv`` (NULL unless status = 'ok') with a GIN index. On both, a trigger drops
an explanation's embeddings when its text changes or it stops being ok, so vectors never describe
stale text (``autolabel embed`` re-creates them).

Every object here is named ``search_*``: they live outside the ORM models, and
``autolabel.db.schema_drift`` ignores that prefix. NOTE for later SQLite migrations: a batch
("move and copy") alter of ``explanations`` or ``saes`` drops these triggers; re-create them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_INSERT_ROW = """
    INSERT INTO search_fts(rowid, text, sae, layer, feature_index)
    SELECT NEW.id, NEW.text, s.name, s.layer, f."index"
    FROM features f JOIN saes s ON s.id = f.sae_id
    WHERE f.id = NEW.feature_id AND NEW.status = 'ok' AND NEW.text IS NOT NULL;
"""

SQLITE_UP = [
    "CREATE VIRTUAL TABLE search_fts USING fts5("
    "text, sae, layer, feature_index, tokenize = 'porter unicode61 remove_diacritics 2')",
    f"""CREATE TRIGGER search_fts_ai AFTER INSERT ON explanations BEGIN
    {_SQLITE_INSERT_ROW}
    END""",
    """CREATE TRIGGER search_fts_ad AFTER DELETE ON explanations BEGIN
    DELETE FROM search_fts WHERE rowid = OLD.id;
    END""",
    f"""CREATE TRIGGER search_fts_au AFTER UPDATE OF text, status, feature_id ON explanations
    BEGIN
    DELETE FROM search_fts WHERE rowid = OLD.id;
    {_SQLITE_INSERT_ROW}
    END""",
    """CREATE TRIGGER search_fts_sae_au AFTER UPDATE OF name, layer ON saes BEGIN
    UPDATE search_fts SET sae = NEW.name, layer = NEW.layer
    WHERE rowid IN (SELECT e.id FROM explanations e JOIN features f ON f.id = e.feature_id
                    WHERE f.sae_id = NEW.id);
    END""",
    """CREATE TRIGGER search_embeddings_au AFTER UPDATE OF text, status ON explanations
    WHEN NEW.text IS NOT OLD.text OR NEW.status <> 'ok' BEGIN
    DELETE FROM embeddings WHERE explanation_id = NEW.id;
    END""",
    # Backfill what is already there.
    """INSERT INTO search_fts(rowid, text, sae, layer, feature_index)
    SELECT e.id, e.text, s.name, s.layer, f."index"
    FROM explanations e JOIN features f ON f.id = e.feature_id JOIN saes s ON s.id = f.sae_id
    WHERE e.status = 'ok' AND e.text IS NOT NULL""",
]

SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS search_embeddings_au",
    "DROP TRIGGER IF EXISTS search_fts_sae_au",
    "DROP TRIGGER IF EXISTS search_fts_au",
    "DROP TRIGGER IF EXISTS search_fts_ad",
    "DROP TRIGGER IF EXISTS search_fts_ai",
    "DROP TABLE IF EXISTS search_fts",
]

# Adding a stored generated column computes it for every existing row (the backfill).
POSTGRES_UP = [
    """ALTER TABLE explanations ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS (
        CASE WHEN status = 'ok' THEN to_tsvector('english'::regconfig, coalesce(text, ''))
        END) STORED""",
    "CREATE INDEX search_tsv_gin ON explanations USING gin (search_tsv)",
    """CREATE FUNCTION search_embeddings_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.text IS DISTINCT FROM OLD.text OR NEW.status <> 'ok' THEN
            DELETE FROM embeddings WHERE explanation_id = NEW.id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER search_embeddings_au AFTER UPDATE OF text, status ON explanations
    FOR EACH ROW EXECUTE FUNCTION search_embeddings_invalidate()""",
]

POSTGRES_DOWN = [
    "DROP TRIGGER IF EXISTS search_embeddings_au ON explanations",
    "DROP FUNCTION IF EXISTS search_embeddings_invalidate()",
    "DROP INDEX IF EXISTS search_tsv_gin",
    "ALTER TABLE explanations DROP COLUMN IF EXISTS search_tsv",
]


def _run(statements: list[str]) -> None:
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _run(SQLITE_UP)
    elif dialect == "postgresql":
        _run(POSTGRES_UP)
    else:  # pragma: no cover - only the two supported backends
        raise NotImplementedError(f"no search index for the {dialect} dialect")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _run(SQLITE_DOWN)
    elif dialect == "postgresql":
        _run(POSTGRES_DOWN)
