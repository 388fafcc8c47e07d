"""Labels people can trust: a validation score to choose by, a null, a CI and a verdict.

Each ``scores`` row gains what issue 13 asks every score to carry:

- ``validation_value``: the same scorer on the *validation* split, the only number best-of-k
  chooses by (``value`` stays the test-split score, the one reported); NULL for scores made
  before the validation split existed, whose choice is then marked "selected on test";
- ``null_mean`` / ``null_p95`` / ``null_n``: the null distribution of the test score (the
  explanation's own predictions paired with the wrong held-out sequences; no LLM call);
- ``ci_low`` / ``ci_high``: a bootstrap 95% CI over held-out sequences;
- ``verdict``: trusted | weak | at_floor | unscored, from the rule in the run's
  ``[scoring]`` config. NULL on rows scored before this revision until the score stage fills
  it in from the stored predictions (again without an LLM call).

On SQLite the table is rebuilt in batch mode for the CHECK constraint; ``scores`` carries no
search-index triggers.

Revisions 0005-0008 landed in the previous release as empty placeholders, so databases in the
wild sit at 0008 without any of this; they stay empty forever and the real changes of this round
are 0009-0012. A revision that has landed is never edited (``tests/db/test_migrate.py`` pins
their hashes): add a new one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERDICT_CHECK = "verdict IS NULL OR verdict IN ('trusted','weak','at_floor','unscored')"
FLOAT_COLUMNS = ("validation_value", "null_mean", "null_p95", "ci_low", "ci_high")


def upgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        for name in FLOAT_COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("null_n", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("verdict", sa.String(16), nullable=True))
        batch.create_check_constraint("verdict", VERDICT_CHECK)


def downgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_constraint(op.f("ck_scores_verdict"), type_="check")
        for name in (*FLOAT_COLUMNS, "null_n", "verdict"):
            batch.drop_column(name)
