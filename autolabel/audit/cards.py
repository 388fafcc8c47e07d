"""Flagged-feature cards: the evidence a reviewer needs to judge a flag at a glance.

Per flagged feature: its label with the label's trust verdict and score against its floor; its
strongest counterfactual pairs as *distinct* sentences, both sides with the span activation on
each and per-token shading; and the feature's own top corpus contexts (from collection) beside
them, so a polysemous trigger ("straight" in "straight line") is visible next to the
demographic one. Replication and the template-specific marker come with each flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autolabel.audit.activations import token_activations
from autolabel.audit.evaluate import CategoryResult
from autolabel.audit.flags import SEVERITY_ORDER
from autolabel.audit.plan import EVIDENCE_VERDICTS, SEVERITY_ACTIONS, AuditOutcome, AuditPlan

Shaded = dict[int, list[tuple[str, np.ndarray]]]  # sentence row -> (token, activations)

PAIRS_PER_CATEGORY = 3
CORPUS_WINDOW = 12  # tokens shown either side of a corpus example's peak
CARD_BATCH = 32


def build_cards(plan: AuditPlan, out: AuditOutcome) -> list[dict[str, Any]]:
    """One card per flagged feature: label, scores, pair evidence, corpus contexts, action."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for f in out.flags:
        grouped.setdefault(f["feature"], []).append(f)
    picks = {feat: _pick_pairs(plan, out, feat, fl) for feat, fl in grouped.items()}
    shaded, cols = _shade(out, picks)
    cards = []
    for feat, fl in grouped.items():
        sev = max((x["severity"] for x in fl), key=SEVERITY_ORDER.index)
        cards.append({"feature": feat, "severity": sev, "action": SEVERITY_ACTIONS[sev],
                      "label": label_facts(plan.labels.get(feat)),
                      "categories": sorted({x["category"] for x in fl}), "flags": fl,
                      "template_specific": any(x["template_specific"] for x in fl),
                      "pairs": [_pair_card(p, shaded, cols[feat]) for p in picks[feat]],
                      "corpus": corpus_contexts(out, feat)})
    cards.sort(key=lambda c: (-SEVERITY_ORDER.index(c["severity"]), c["feature"]))
    return cards


def label_facts(label: dict[str, Any] | None) -> dict[str, Any]:
    """A label as the report shows it: text, trust verdict, score vs floor, used or not."""
    if label is None:
        return {"text": None, "verdict": "none", "used_as_evidence": False}
    return {**label, "used_as_evidence": bool(label.get("text"))
            and label.get("verdict") in EVIDENCE_VERDICTS}


def _results_for(out: AuditOutcome, cats: Sequence[str]) -> list[CategoryResult]:
    """The category results a feature's flags name, in flag order."""
    by_cat = {r.category: r for r in out.evaluation.results}
    return [by_cat[c] for c in dict.fromkeys(cats) if c in by_cat]


def _pick_pairs(plan: AuditPlan, out: AuditOutcome, feat: int,
                flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The feature's strongest oriented pairs per flagged category, no sentence shown twice."""
    acts, n = out.activations.acts, len(plan.pairs)
    j = {int(f): k for k, f in enumerate(plan.feats)}[feat]
    seen: set[str] = set()
    picked: list[dict[str, Any]] = []
    for res in _results_for(out, [f["category"] for f in flags]):
        a_idx = np.where(res.signs > 0, res.rows, res.rows + n)  # pole-a side of each pair
        b_idx = np.where(res.signs > 0, res.rows + n, res.rows)
        diff = acts[a_idx, j].astype(np.float64) - acts[b_idx, j]
        toward = np.sign(res.stats.dz[j]) or 1.0
        count = 0
        for k in np.argsort(-diff * toward, kind="stable").tolist():
            ta, tb = out.activations.texts[a_idx[k]], out.activations.texts[b_idx[k]]
            if ta in seen or tb in seen or count >= PAIRS_PER_CATEGORY:
                continue
            seen |= {ta, tb}
            count += 1
            pair = plan.pairs[int(res.rows[k])]
            picked.append({"category": res.category, "source": pair.source,
                           "family": pair.family, "poles": res.poles,
                           "index": (int(a_idx[k]), int(b_idx[k])), "diff": float(diff[k]),
                           "span_max": (float(acts[a_idx[k], j]), float(acts[b_idx[k], j]))})
    return picked


def _shade(out: AuditOutcome, picks: dict[int, list[dict[str, Any]]],
           ) -> tuple[Shaded, dict[int, int]]:
    """Per-token activations of every shown sentence for the flagged features (batched), and
    each feature's column in them."""
    feats = np.array(sorted(picks), dtype=np.int64)
    cols = {int(f): k for k, f in enumerate(feats)}
    rows = sorted({i for ps in picks.values() for p in ps for i in p["index"]})
    per_row: list[list[tuple[str, np.ndarray]]] = []
    for lo in range(0, len(rows), CARD_BATCH):
        chunk = [out.activations.texts[i] for i in rows[lo:lo + CARD_BATCH]]
        per_row.extend(token_activations(out.subject, out.sae, chunk, feats))
    return dict(zip(rows, per_row, strict=True)), cols


def _pair_card(pick: dict[str, Any], shaded: Shaded, col: int) -> dict[str, Any]:
    """Both sides of one pair: group, sentence, span activation and per-token shading."""
    sides = []
    for side, row in zip((0, 1), pick["index"], strict=True):
        group = pick["poles"][side] if pick["poles"] else ("A" if side == 0 else "B")
        sides.append({"group": group, "span_max": pick["span_max"][side],
                      "tokens": [(tok, float(a[col])) for tok, a in shaded[row]]})
    return {"category": pick["category"], "source": pick["source"], "family": pick["family"],
            "diff": pick["diff"], "sides": sides}


def corpus_contexts(out: AuditOutcome, feat: int) -> list[dict[str, Any]]:
    """The feature's own top corpus windows (distinct documents), cut around their peak."""
    tokenizer = out.subject.tokenizer
    shown: list[dict[str, Any]] = []
    texts: set[str] = set()
    for ids, acts, peak in out.corpus.get(feat, []):
        top = int(np.argmax(acts))
        lo, hi = max(0, top - CORPUS_WINDOW), min(len(ids), top + CORPUS_WINDOW + 1)
        toks = [(tokenizer.decode([int(t)]), float(a)) for t, a in zip(ids[lo:hi], acts[lo:hi],
                                                                      strict=True)]
        text = "".join(t for t, _ in toks)
        if text not in texts:
            texts.add(text)
            shown.append({"tokens": toks, "max": peak})
    return shown
