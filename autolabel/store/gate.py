"""Re-judging stored candidates with the quality gate: what to re-check, and writing verdicts.

Candidates stored before the gate existed (``gate_version`` NULL) or by an older gate are
re-judged from what is stored — the raw reply and the prompt in ``llm_calls`` — so no LLM call
is needed. A candidate that stops being ``ok`` loses its scores and its best flag (a rejected
text is never scored, never best; the search-index triggers drop it from search and its
embeddings), and its feature's best label is chosen again among what is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from autolabel.db import Explanation, LLMCall, Score
from autolabel.store.scores import mark_best

JUDGED_STATUSES = ("ok", "rejected", "parse_error", "refused")  # "error" has no reply to judge


@dataclass(frozen=True)
class StoredCandidate:
    """What the gate needs to re-judge one stored candidate."""

    id: int
    feature_id: int
    explainer: str
    status: str
    reason: str | None
    text: str | None
    raw_reply: str | None
    prompt: str | None  # the prompt as stored in llm_calls (chat messages rendered as text)


@dataclass(frozen=True)
class GateUpdate:
    """A new verdict for one stored candidate."""

    id: int
    status: str
    text: str | None
    reason: str | None
    error: str | None


def candidates_to_gate(session: Session, feature_ids: Sequence[int], version: int,
                       force: bool = False) -> list[StoredCandidate]:
    """Stored candidates of these features judged by no gate or an older one (all of them
    with ``force``), with the prompt each one answered."""
    query = (select(Explanation, LLMCall.prompt)
             .outerjoin(LLMCall, LLMCall.id == Explanation.llm_call_id)
             .where(Explanation.feature_id.in_(list(feature_ids)),
                    Explanation.status.in_(JUDGED_STATUSES))
             .order_by(Explanation.id))
    if not force:
        query = query.where(or_(Explanation.gate_version.is_(None),
                                Explanation.gate_version < version))
    return [StoredCandidate(e.id, e.feature_id, e.explainer, e.status, e.reason, e.text,
                            e.raw_reply, prompt) for e, prompt in session.execute(query)]


def apply_gate(session: Session, updates: Sequence[GateUpdate], version: int) -> list[int]:
    """Write the verdicts (every judged row gets ``gate_version``); rows that stop being ok
    lose their scores and best flag, and their features' best label is chosen again.
    Returns the ids of the features whose labels were re-chosen."""
    demoted: set[int] = set()
    features: set[int] = set()
    for update in updates:
        row = session.get(Explanation, update.id)
        if row is None:
            continue
        if row.status == "ok" and (update.status != "ok" or update.text != row.text):
            demoted.add(row.id)  # its scores describe a text that is no longer the label
            features.add(row.feature_id)
            row.is_best = False
        row.status, row.reason, row.gate_version = update.status, update.reason, version
        if update.status == "ok":
            row.text, row.error = update.text, None
        else:
            row.text, row.error = None, update.error
    if demoted:
        session.execute(delete(Score).where(Score.explanation_id.in_(sorted(demoted))))
        session.flush()
        mark_best(session, sorted(features))
    return sorted(features)
