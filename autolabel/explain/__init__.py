"""Explainers and the quality gate every candidate passes before it can be ``ok``.

- :mod:`.llm` — :class:`LLMExplainer`: k candidates per feature from a template family
  (``bills``, ``delphi``, ``pairs``; completion or chat prompt by model kind);
- :mod:`.tokens` — :class:`TokenStatsExplainer`: the offline token-statistics baseline with
  readable wording;
- :mod:`.gate` — the quality gate (cleaning, then rejection reasons stored with the
  candidate) and :func:`regate`-style re-judging of stored candidates;
- :mod:`.candidate` — the :class:`Candidate` row every explainer returns.
"""

from __future__ import annotations

from autolabel.explain.candidate import (
    ERROR,
    OK,
    PARSE_ERROR,
    REFUSED,
    REJECTED,
    STATUSES,
    Candidate,
)
from autolabel.explain.gate import (
    GATE_VERSION,
    REASONS,
    GateConfig,
    PromptFacts,
    Verdict,
    judge_reply,
    judge_text,
    prompt_explanations,
    prompt_facts,
)
from autolabel.explain.llm import LLMExplainer
from autolabel.explain.tokens import TOKEN_STATS_VERSION, TokenStatsExplainer, readable_label

__all__ = [
    "ERROR", "GATE_VERSION", "OK", "PARSE_ERROR", "REASONS", "REFUSED", "REJECTED", "STATUSES",
    "TOKEN_STATS_VERSION", "Candidate", "GateConfig", "LLMExplainer", "PromptFacts",
    "TokenStatsExplainer", "Verdict", "judge_reply", "judge_text", "prompt_explanations",
    "prompt_facts", "readable_label",
]
