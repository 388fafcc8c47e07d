"""The stages of a labeling batch, each callable alone and each skipping work already done.

A stage takes the effective config, an open database and (optionally) the run's
:class:`~autolabel.loading.RunContext`, does its work in memory, and writes results through
the store in transactions keyed by content hashes of its inputs, so re-running a finished stage
is a no-op and a killed one resumes.
"""

from __future__ import annotations

from autolabel.pipeline.batch import default_report_dir, run_batch, run_stages
from autolabel.pipeline.collect import CollectSummary, collect_stage, sae_train_stage
from autolabel.pipeline.explain import ExplainSummary, explain_stage
from autolabel.pipeline.score import ScoreSummary, score_stage, test_sequences

__all__ = [
    "CollectSummary", "ExplainSummary", "ScoreSummary", "collect_stage", "default_report_dir",
    "explain_stage", "run_batch", "run_stages", "sae_train_stage", "score_stage",
    "test_sequences",
]
