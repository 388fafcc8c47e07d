"""Does a simulator's output depend on the explanation at all? (issue 9)

Weak LLMs (the offline Gemma 3 270M base) predict the same digits whatever the explanation
says. :func:`sanity_check` measures that on the fixed planted sanity set; ``scoring.simulator =
"auto"`` uses the LLM simulator only when it passes. The verdict is remembered on disk, keyed
by what it depends on and what is known without loading the model (simulator name, which names
the model; the weights' revision when it can be read from disk; the prompt template's hash;
:data:`SANITY_VERSION`), so a run with nothing new to score neither pays the ~20 s check nor
loads the model to learn which simulator's scores are already stored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from autolabel.config import cache_dir
from autolabel.hashing import content_hash
from autolabel.prompting import template_hash
from autolabel.scoring.metrics import pooled_pearson
from autolabel.scoring.planted import planted_features, sanity_sequences, wrong_description
from autolabel.scoring.types import SCALE_MAX, LLMSimulator, SanityReport, Simulator

SANITY_VERSION = "sanity/1"  # bump when the check itself changes (texts, thresholds, metric)
_SANITY_CACHE: dict[str, SanityReport] = {}  # key -> report, for this process


def sanity_check(simulator: Simulator, *, min_delta: float = 0.5,
                 min_discrimination: float = 0.75) -> SanityReport:
    """Do the predictions depend on the explanation? On the fixed planted sanity set: mean
    |Δ prediction| between the true and a wrong description, and the fraction of features
    where the true description scores higher. ``min_delta`` is on the 0-9 digit scale."""
    deltas, wins, per = [], 0, {}
    for i, feature in enumerate(planted_features()):
        seqs = sanity_sequences(feature)
        tokens = [s.tokens for s in seqs]
        truth = [np.asarray(s.activations) * SCALE_MAX for s in seqs]
        right = simulator.predict(feature.description, tokens)
        wrong = simulator.predict(wrong_description(i), tokens)
        delta = float(np.mean(np.abs(np.concatenate(right) - np.concatenate(wrong))))
        r_right, r_wrong = pooled_pearson(truth, right), pooled_pearson(truth, wrong)
        win = r_right is not None and (r_wrong is None or r_right > r_wrong)
        deltas.append(delta)
        wins += int(win)
        per[feature.name] = {"delta": round(delta, 4), "r_true": r_right, "r_wrong": r_wrong}
    mean_delta, disc = float(np.mean(deltas)), wins / len(deltas)
    passed = mean_delta >= min_delta and disc >= min_discrimination
    return SanityReport(simulator.name, mean_delta, disc, passed,
                        {"features": per, "min_delta": min_delta,
                         "min_discrimination": min_discrimination})


def sanity_key(simulator: LLMSimulator) -> str:
    """The verdict's cache key, from things known without loading the model."""
    return content_hash(SANITY_VERSION, simulator.name, simulator.revision or "",
                        template_hash(simulator.template))[:24]


def _sanity_path(key: str) -> Path:
    """Disk cache entry for one key (the tests point this at a temp dir)."""
    return cache_dir() / "sanity" / f"{key}.json"


def stored_report(key: str) -> SanityReport | None:
    """The remembered verdict for ``key`` (this process first, then disk), or None.

    An unreadable file counts as missing: the check is re-run and the file rewritten.
    """
    if key in _SANITY_CACHE:
        return _SANITY_CACHE[key]
    path = _sanity_path(key)
    if not path.is_file():
        return None
    try:
        report = SanityReport(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
    _SANITY_CACHE[key] = report
    return report


def store_report(key: str, report: SanityReport) -> None:
    """Remember a verdict in this process and on disk (written atomically)."""
    path = _sanity_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(report), default=float))
    tmp.replace(path)
    _SANITY_CACHE[key] = report


def cached_sanity_check(simulator: LLMSimulator) -> SanityReport:
    """The sanity check, run once per simulator (model + revision + prompt) and remembered.

    It costs ~20 s with the offline model; a nightly run that has nothing new to score must not
    pay it every time. The cached report keeps its numbers, so summaries can still cite them.
    """
    key = sanity_key(simulator)
    report = stored_report(key)
    if report is None:
        report = sanity_check(simulator)
        store_report(key, report)
    return report
