"""The JSON API on SQLite and PostgreSQL: Neuronpedia-style fields, verdicts, errors, headers,
and a server that cannot write to its database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from autolabel.serve import CSP
from tests.serve.builder import IMG, SAE_NAME, SCRIPT


def _search(served: dict[str, Any], **params: Any) -> dict[str, Any]:
    reply = served["client"].get("/api/search", params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_search_fields_close_to_neuronpedia(served: dict[str, Any], mode: str) -> None:
    data = _search(served, q="months January", mode=mode)
    assert data["mode"] == mode and data["query"] == "months January"
    top = data["results"][0]
    assert top["feature"] == f"{SAE_NAME}:1" and top["index"] == "1"
    assert (top["modelId"], top["layer"], top["layerNumber"]) == ("tiny", SAE_NAME, 2)
    assert top["typeName"] in ("llm", "tokens") and top["explanationModelName"] == "tiny-llm"
    assert top["description"] in ("names of months like January", "months of the year tokens")
    # The feature's label (chosen on validation): its verdict and test score with the floor.
    assert top["label"] == "names of months like January" and top["verdict"] == "trusted"
    assert (top["score"], top["floor"]) == (0.62, 0.05)
    assert top["nullP95"] == 0.1 and top["ciLow"] == pytest.approx(0.52)
    assert top["frac_nonzero"] == pytest.approx(0.02) and top["rank"] == 1
    assert top["url"] == f"/feature/{SAE_NAME}/1"


def test_rejected_hidden_and_verdict_filter(served: dict[str, Any]) -> None:
    ids = served["ids"]
    # The gated feature's only candidate was rejected: never indexed, so never found.
    everything = _search(served, q="month", mode="keyword", verdict="all")
    assert all(r["explanationId"] != ids["rejected"] for r in everything["results"])
    court = _search(served, q="court cases judge", mode="keyword")
    assert [r["verdict"] for r in court["results"]] == ["at_floor"]
    assert _search(served, q="court cases judge", mode="keyword",
                   verdict="trusted,weak")["results"] == []
    trusted = _search(served, q="months", mode="hybrid", verdict="trusted")
    assert [r["feature"] for r in trusted["results"]] == [f"{SAE_NAME}:1"]
    bad = served["client"].get("/api/search", params={"q": "x", "verdict": "great"})
    assert bad.status_code == 400 and "unknown verdict 'great'" in bad.json()["error"]


def test_search_filters_and_bad_parameters(served: dict[str, Any]) -> None:
    client = served["client"]
    assert _search(served, q="months", sae=SAE_NAME, layer="2", min_score="0.5")["count"] == 1
    assert _search(served, q="months", layer="9")["results"] == []
    assert _search(served, q="court", flagged="gender", mode="keyword")["count"] == 1
    assert _search(served, q="months", explainer="tokens", mode="keyword",
                   verdict="all")["results"][0]["typeName"] == "tokens"
    for params, message in [({"q": ""}, "empty search query"),
                            ({"q": "x", "mode": "fuzzy"}, "unknown search mode"),
                            ({"q": "x", "layer": "six"}, "layer must be a number"),
                            ({"q": "x", "limit": "1000"}, "limit must be between"),
                            ({"q": "x", "sae": "nope"}, "no SAE named 'nope'")]:
        reply = client.get("/api/search", params=params)
        assert reply.status_code in (400, 404) and message in reply.json()["error"], params


def test_feature_json(served: dict[str, Any]) -> None:
    reply = served["client"].get(f"/api/feature/{SAE_NAME}/1")
    assert reply.status_code == 200
    data = reply.json()
    assert (data["modelId"], data["layer"], data["index"]) == (
        str(served["ids"]["tokenizer"]), SAE_NAME, "1")
    assert data["frac_nonzero"] == pytest.approx(0.02) and data["maxActApprox"] == 4.0
    assert data["freq_hist_data_bar_heights"] == [40, 12, 5, 2, 1]
    assert data["freq_hist_data_bar_values"][0] == pytest.approx(0.2)
    assert data["label"]["verdict"] == "trusted" and data["label"]["selectedOn"] == "validation"
    types = {e["typeName"]: e for e in data["explanations"]}
    assert types["llm"]["scores"][0]["value"] == 0.62
    assert types["llm"]["scores"][0]["floor"] == 0.05
    assert types["tokens"]["scores"][0]["verdict"] == "weak"
    top = next(a for a in data["activations"] if a["split"] == "train" and a["kind"] == "top")
    assert top["tokens"] == ["in", "January", "and", "February"]  # the real tokenizer
    assert top["values"] == [0.0, 4.0, 0.0, 3.0] and top["maxValueTokenIndex"] == 1
    assert {a["split"] for a in data["activations"]} == {"train", "validation", "test"}
    decoder = data["neighbours"]["decoder"]
    assert decoder[0]["index"] == 3 and decoder[0]["cosine"] > 0.9
    assert decoder[0]["url"] == f"/feature/{SAE_NAME}/3"
    labels = data["neighbours"]["labels"]
    assert labels and all(n["feature"] != f"{SAE_NAME}:1" for n in labels)


def test_feature_flags_and_hostile_text_in_json(served: dict[str, Any]) -> None:
    client = served["client"]
    court = client.get(f"/api/feature/{SAE_NAME}/3").json()
    assert court["flags"][0]["category"] == "gender" and court["flags"][0]["tier"] == 2
    hostile = client.get(f"/api/feature/{SAE_NAME}/5").json()
    tokens = hostile["activations"][0]["tokens"]
    assert SCRIPT in tokens and IMG in tokens  # JSON carries text as text
    assert hostile["activations"][0]["documentId"] == IMG


def test_errors_and_headers(served: dict[str, Any]) -> None:
    client = served["client"]
    missing = client.get(f"/api/feature/{SAE_NAME}/7")
    assert missing.status_code == 404 and "has not been collected" in missing.json()["error"]
    assert client.get("/api/feature/nope/1").status_code == 404
    ok = client.get("/api/search", params={"q": "months"})
    assert ok.headers["content-security-policy"] == CSP
    assert "script-src" not in CSP and "default-src 'none'" in CSP
    assert ok.headers["x-content-type-options"] == "nosniff"
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/feature/{sae}/{index}"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_server_cannot_write(served: dict[str, Any]) -> None:
    """The server's engine refuses writes (query_only / read-only transactions)."""
    app_db = served["client"].app.state.serve.database
    with pytest.raises(DBAPIError), app_db.engine.begin() as conn:
        conn.execute(text("DELETE FROM explanations"))
    assert _search(served, q="months", mode="keyword")["count"] >= 1
