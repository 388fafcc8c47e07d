"""Neuronpedia export: a directory of feature files with an index, or one JSON list."""

from __future__ import annotations

import json
from pathlib import Path

from autolabel import db as dbm
from autolabel.export import export_features
from autolabel.subject import load_tokenizer
from tests.tiny import WORDS


def test_neuronpedia_directory(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    out = tmp_path / "np"
    assert export_features(database, sae_name=None, fmt="neuronpedia", out=out,
                           load_tokenizer=load_tokenizer) == 5
    index = json.loads((out / "index.json").read_text())
    assert [f["index"] for f in index["features"]] == [str(i) for i in range(5)]
    feat = json.loads((out / "0.json").read_text())
    for key in ("modelId", "layer", "index", "hookName", "saeHash", "frac_nonzero",
                "maxActApprox", "freq_hist_data_bar_heights", "explanations", "activations"):
        assert key in feat
    assert feat["index"] == "0" and feat["activations"]
    for act in feat["activations"]:
        assert len(act["tokens"]) == len(act["values"]) == len(act["tokenIds"]) > 0
        assert set(act["tokens"]) <= set(WORDS) | {"<bos>", "<eos>", "<unk>", "<pad>"}
        assert act["values"][act["maxValueTokenIndex"]] == max(act["values"])
    expl = feat["explanations"][0]
    assert {"description", "explanationModelName", "typeName", "status", "scores"} <= set(expl)
    scored = [s for e in feat["explanations"] for s in e["scores"]]
    assert all("floor" in s for s in scored)


def test_neuronpedia_single_file(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    out = tmp_path / "np.json"
    export_features(database, sae_name=None, fmt="neuronpedia", out=out, features="2,4",
                    load_tokenizer=load_tokenizer)
    items = json.loads(out.read_text())
    assert [i["index"] for i in items] == ["2", "4"]
