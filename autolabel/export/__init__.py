"""Export features (Neuronpedia-style JSON, lossless JSONL, CSV) and re-import the JSONL.

Formats, chosen with ``fmt``:

- ``jsonl``: one self-contained line per feature (its SAE, the collections its examples came
  from, statistics, examples with base64 blobs, explanations with scores and embeddings).
  Field order is fixed and rows are sorted by their natural keys, so the same database content
  always gives the same bytes; :func:`import_jsonl` reads it back idempotently. Not exported:
  run ids, timestamps, LLM call logs (``llm_call_id``), audits and flags (they belong to an
  audit run, not to a feature).
- ``neuronpedia``: Neuronpedia's feature JSON (``modelId``, ``layer`` — Neuronpedia's source
  id, here the SAE id or name —, ``index`` as a string, ``frac_nonzero``, ``maxActApprox``,
  ``freq_hist_data_bar_*``, ``explanations``, ``activations: [{tokens, values, maxValue,
  maxValueTokenIndex}]``) plus autolabel fields (scores with floors, statuses, splits).
  ``out`` a directory: one ``<index>.json`` per feature and an ``index.json`` listing them;
  ``out`` ending in ``.json``: one JSON list; no ``out``: the JSON list on stdout.
- ``csv``: one row per explanation, for spreadsheets.

The records themselves (database ↔ dicts) are the store's: :mod:`autolabel.store.records`
reads them, :mod:`autolabel.store.imports` writes them; this package only turns records into
files and lines back into validated records.
"""

from __future__ import annotations

from autolabel.export.formats import FORMATS, export_features
from autolabel.export.importing import import_jsonl
from autolabel.export.neuronpedia import neuronpedia_feature
from autolabel.store.imports import ImportSummary
from autolabel.store.records import FORMAT_TAG, Progress, feature_records

__all__ = ["FORMATS", "FORMAT_TAG", "ImportSummary", "Progress", "export_features",
           "feature_records", "import_jsonl", "neuronpedia_feature"]
