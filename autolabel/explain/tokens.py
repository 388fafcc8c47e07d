"""The offline token-statistics baseline, worded the way a person would write it.

The tokens that carry the feature's activation mass and are over-represented relative to the
corpus, plus the token that usually precedes them, as a readable label: ``the word "among"
(any case)``, ``the words "concern", "concerned", "concerns"``, ``the token "4" after "1"`` —
not ``tokens " among", " Among", "Among"``. Any scorer should beat this; if an LLM explanation
does not, it explains nothing more.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from autolabel.examples import TextExample
from autolabel.explain.candidate import ERROR, Candidate
from autolabel.explain.gate import GATE_VERSION, GateConfig, judge_text
from autolabel.prompting import sanitize_token

TOKEN_STATS_VERSION = "token-stats/2"  # 2: readable wording (issue 13)
SURE_CONTEXT = 0.6  # "after X" from this share of the activation mass on; "often after" below
_START_TOKENS = {"<bos>", "<s>", "<|endoftext|>", "<|begin_of_text|>"}


class TokenStatsExplainer:
    """Deterministic offline baseline (see the module docstring for the wording).

    weight(t) = activation on t / total activation; lift(t) = weight(t) / background p(t);
    tokens are ranked by weight × log(lift) (only lift > 1 counts while any token has it).
    """

    name = "tokens"

    def __init__(self, top_n: int = 3, min_weight: float = 0.02,
                 context_share: float = 0.3, gate: GateConfig | None = None) -> None:
        self.top_n, self.min_weight, self.context_share = top_n, min_weight, context_share
        self.gate = gate or GateConfig()
        self.prompt_hash = hashlib.sha256(TOKEN_STATS_VERSION.encode()).hexdigest()

    def explain(self, examples: Sequence[TextExample],
                background: Mapping[str, float]) -> Candidate:
        """One candidate; status "error" with a reason when nothing fired."""
        mass, before = _activation_mass(examples)
        total = sum(mass.values())
        if total <= 0:
            return self._make(None, ERROR, "no activating tokens in the train examples")
        weights = {t: m / total for t, m in mass.items()}
        tokens = self._top_tokens(weights, _background_probs(background))
        prev, share = _top_item({t: m / total for t, m in before.items()})
        if prev is None or share < self.context_share:
            prev = None
        verdict = judge_text(readable_label(tokens, prev, share), None, self.gate)
        return self._make(verdict.text, verdict.status, verdict.error, verdict.reason)

    def _top_tokens(self, weights: Mapping[str, float],
                    prob: Mapping[str, float] | None) -> list[str]:
        floor = _floor(prob)
        kept = {t: w for t, w in weights.items() if w >= self.min_weight} or dict(weights)
        lift = {t: w / (prob.get(t, floor) if prob else floor) for t, w in kept.items()}
        pool = [t for t in kept if lift[t] > 1] or list(kept)
        score = {t: kept[t] * math.log(max(lift[t], 1.0 + 1e-9)) for t in pool}
        if all(s == score[pool[0]] for s in score.values()):
            score = dict(kept)  # no lift information: rank by activation mass
        return sorted(pool, key=lambda t: (-score[t], -kept[t], t))[: self.top_n]

    def _make(self, text: str | None, status: str, error: str | None,
              reason: str | None = None) -> Candidate:
        return Candidate(explainer=self.name, text=text, status=status, error=error,
                         raw_reply=None, llm_model="", prompt_hash=self.prompt_hash,
                         candidate=0, call_id=None, settings=self.settings(), reason=reason,
                         gate_version=GATE_VERSION)

    def settings(self) -> dict[str, Any]:
        """The algorithm version and its knobs (provenance)."""
        return {"algorithm": TOKEN_STATS_VERSION, "top_n": self.top_n,
                "min_weight": self.min_weight, "context_share": self.context_share}


def readable_label(tokens: Sequence[str], prev: str | None = None, share: float = 0.0) -> str:
    """Tokens (ranked) and an optional preceding token as a label a person would write.

    Tokens that differ only in case or a leading space are one word (``(any case)`` when the
    case varies); a family sharing a stem is listed alphabetically, stem first; pieces that
    are not whole words are called tokens."""
    groups: dict[str, list[str]] = {}
    for tok in tokens:
        groups.setdefault(tok.strip().casefold() or tok, []).append(tok)
    shown = [_display(variants) for variants in groups.values()]
    words = all(_is_word(v) for v in groups.values())
    if len(shown) > 1 and _common_prefix(shown) >= 4:
        shown = sorted(shown, key=str.casefold)
    noun = ("word" if words else "token") + ("s" if len(shown) > 1 else "")
    label = f"the {noun} " + ", ".join(_quote(s) for s in shown)
    if any(len({v.strip() for v in variants}) > 1 for variants in groups.values()):
        label += " (any case)"
    return label + _context(prev, share)


def _display(variants: list[str]) -> str:
    """One group's spelling: lower case when its variants differ in case, else as written."""
    forms = {v.strip() for v in variants}
    if not any(forms):
        return variants[0]  # whitespace-only tokens stay visible (sanitised when quoted)
    return forms.pop() if len(forms) == 1 else next(iter(forms)).casefold()


def _is_word(variants: list[str]) -> bool:
    """A whole word: letters (and ' or -) only, and written after a space or capitalised,
    not a piece glued to the end of another token (``usk``)."""
    core = variants[0].strip()
    letters = core.replace("'", "").replace("-", "")
    return (len(letters) >= 2 and letters.isalpha()
            and any(v[:1].isspace() or v.strip()[:1].isupper() for v in variants))


def _common_prefix(forms: Sequence[str]) -> int:
    return len(os.path.commonprefix([f.casefold() for f in forms]))


def _context(prev: str | None, share: float) -> str:
    """`` after "X"`` (or ``(often after "X")`` below :data:`SURE_CONTEXT`)."""
    if prev is None:
        return ""
    where = ("at the start of a text" if prev.strip() in _START_TOKENS
             else f"after {_quote(prev.strip() or prev)}")
    return f" {where}" if share >= SURE_CONTEXT else f" (often {where})"


def _activation_mass(examples: Sequence[TextExample]) -> tuple[dict[str, float],
                                                               dict[str, float]]:
    """Positive activation summed per token, and per token *preceding* an activating one."""
    mass: dict[str, float] = defaultdict(float)
    before: dict[str, float] = defaultdict(float)
    for ex in examples:
        for i, (tok, act) in enumerate(zip(ex.tokens, ex.activations, strict=True)):
            if act > 0 and math.isfinite(act):
                mass[tok] += act
                if i > 0:
                    before[ex.tokens[i - 1]] += act
    return mass, before


def _background_probs(background: Mapping[str, float]) -> dict[str, float] | None:
    """Counts or probabilities → probabilities (None when no background is known)."""
    total = sum(v for v in background.values() if v > 0)
    if total <= 0:
        return None
    return {t: v / total for t, v in background.items() if v > 0}


def _floor(prob: Mapping[str, float] | None) -> float:
    """Probability assumed for a token the background never saw: half the rarest one."""
    return min(prob.values()) / 2 if prob else 1e-6


def _top_item(shares: Mapping[str, float]) -> tuple[str | None, float]:
    if not shares:
        return None, 0.0
    tok = min(shares, key=lambda t: (-shares[t], t))
    return tok, shares[tok]


def _quote(token: str) -> str:
    """A token as it appears in the label: quoted, escaped, control characters visible."""
    return '"' + sanitize_token(token).replace('"', '\\"') + '"'
