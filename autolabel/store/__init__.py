"""The store: every read and write of stage results, one module per kind of row.

Stages compute in memory and hand their results here; every write is one transaction (the
caller's session), so a killed process leaves either the whole result of a step or nothing.
Import from the submodules; the names below are the ones most callers need.
"""

from __future__ import annotations

from autolabel.store.collections import (
    ACT_DTYPE,
    TOKEN_DTYPE,
    CollectionSpec,
    collection_by_key,
    features_done,
    find_collection,
    finish_collection,
    select_features,
    start_collection,
    store_feature_results,
)
from autolabel.store.explanations import (
    existing_explanations,
    feature_explanations,
    ok_explanations,
    store_candidates,
)
from autolabel.store.features import (
    FeaturePayload,
    feature_model_id,
    feature_payload,
    get_feature,
    list_features,
    load_examples,
)
from autolabel.store.saes import find_sae, register_sae, sae_name
from autolabel.store.scores import add_score, mark_best, score_stats, scored_keys

__all__ = [
    "ACT_DTYPE", "TOKEN_DTYPE", "CollectionSpec", "FeaturePayload", "add_score",
    "collection_by_key",
    "existing_explanations", "feature_explanations", "feature_model_id", "feature_payload",
    "features_done", "find_collection", "find_sae", "finish_collection", "get_feature",
    "list_features", "load_examples", "mark_best", "ok_explanations", "register_sae",
    "sae_name", "score_stats", "scored_keys", "select_features", "start_collection",
    "store_candidates", "store_feature_results",
]
