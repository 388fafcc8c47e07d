"""The HTML pages on SQLite and PostgreSQL: search, feature, SAE overview, audits, errors; every
piece of corpus text and model output escaped."""

from __future__ import annotations

import re
from typing import Any

from autolabel.serve.app import REPORT_CSP
from tests.serve.builder import SAE_NAME


def _page(served: dict[str, Any], path: str, status: int = 200, **params: Any) -> str:
    reply = served["client"].get(path, params=params)
    assert reply.status_code == status, reply.text[:500]
    assert reply.headers["content-type"].startswith("text/html")
    return str(reply.text)


def test_search_page(served: dict[str, Any]) -> None:
    home = _page(served, "/")
    assert 'name="q"' in home and f'href="/sae/{SAE_NAME}"' in home
    page = _page(served, "/", q="months", mode="hybrid")
    rows = re.findall(r'<tr class="hit">(.*?)</tr>', page, re.S)
    assert rows and f'href="/feature/{SAE_NAME}/1"' in rows[0]
    assert 'class="verdict v-trusted">trusted<' in rows[0]
    assert "0.620 (floor 0.050)" in rows[0] and "2%" in rows[0]
    assert "rejected labels hidden" in page
    empty = _page(served, "/", q="zebra crossings", mode="keyword")
    assert "No features match" in empty
    bad = _page(served, "/", status=400, q="x", mode="fuzzy")
    assert "unknown search mode" in bad


def test_feature_page(served: dict[str, Any]) -> None:
    page = _page(served, f"/feature/{SAE_NAME}/1")
    # Tokens decoded by the real tokenizer, highlighted by activation / max (4.0).
    assert ('<span class="tok a9" title="activation 4.000" data-act="4.000">January</span>'
            in page)
    assert '<span class="tok a0" title="activation 0.000" data-act="0.000">in</span>' in page
    assert re.search(r'<span class="tok a7"[^>]*>February</span>', page)
    for section in ("ctx-top", "ctx-quantile", "ctx-validation", "ctx-test"):
        assert f'id="{section}"' in page
    assert '<svg class="hist"' in page and page.count("<rect ") >= 5
    assert "names of months like January" in page and "v-trusted" in page
    assert "0.620 (floor 0.050)" in page and "0.410 (floor 0.040)" in page
    assert "chosen on the validation split" in page
    assert f'href="/feature/{SAE_NAME}/3"' in page  # nearest decoder direction
    labels = page.split("Nearest labels", 1)[1]
    assert "/feature/" in labels  # nearest labels from the vector index
    court = _page(served, f"/feature/{SAE_NAME}/3")
    assert "gender" in court and 'href="/audits/' in court and "female &gt; male" in court


def test_hostile_text_is_escaped(served: dict[str, Any]) -> None:
    for page in (_page(served, f"/feature/{SAE_NAME}/5"),
                 _page(served, "/", q="markup", mode="keyword")):
        assert "<script" not in page.lower() and "<img" not in page.lower()
        assert "&lt;script&gt;document.title=&#39;PWNED&#39;&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=" in page


def test_sae_overview(served: dict[str, Any]) -> None:
    page = _page(served, f"/sae/{SAE_NAME}")
    share = re.search(r'id="trusted-share">(.*?)<', page)
    assert share and share.group(1).strip() == "25% of 4 features"  # 1 trusted of 4 labels
    verdicts = page.split('id="verdicts"', 1)[1].split("</table>", 1)[0]
    total = re.search(r'<tr class="total">(.*?)</tr>', verdicts, re.S)
    assert total and re.findall(r'class="num">(\d+)<', total.group(1)) == ["1", "0", "1", "1",
                                                                            "1"]
    assert page.count('<svg class="hist"') == 2
    assert "v-rejected" in page  # the gated feature is listed as rejected ...
    assert "the month of the month" not in page  # ... and its rejected text is no label


def test_audits(served: dict[str, Any]) -> None:
    audit = served["ids"]["audit"]
    listing = _page(served, "/audits")
    assert f'href="/audits/{audit}"' in listing and f'href="/audits/{audit}/report"' in listing
    page = _page(served, f"/audits/{audit}")
    assert "gender" in page and f'href="/feature/{SAE_NAME}/3"' in page
    report = served["client"].get(f"/audits/{audit}/report")
    assert report.status_code == 200 and "report body" in report.text
    assert report.headers["content-security-policy"] == REPORT_CSP
    assert "sandbox" in REPORT_CSP and "script" not in REPORT_CSP
    assert "no audit with id 999" in _page(served, "/audits/999", status=404)


def test_errors_and_api_page(served: dict[str, Any]) -> None:
    missing = _page(served, f"/feature/{SAE_NAME}/7", status=404)
    assert "has not been collected" in missing and 'id="error"' in missing
    api = _page(served, "/api")
    assert "/api/search" in api and "/api/feature/{sae}/{index}" in api
    css = served["client"].get("/static/style.css")
    assert css.status_code == 200 and ".tok" in css.text
