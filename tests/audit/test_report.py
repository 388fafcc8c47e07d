"""The HTML report: parses, has every section, no external URLs, escapes, renders in Chromium."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autolabel.audit.report import write_report
from autolabel.audit.run import run_audit
from autolabel.db import open_database
from tests.audit.fakes import audit_ctx, planted_sae, tiny_audit_subject

SECTIONS = ["control", "summary", "system", "crosswalk", "taxonomy", "data", "method", "results",
            "flags", "limitations", "repro", "signoff"]
EVIL = "<script>alert(1)</script>"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for k, v in attrs:
            if k == "id" and v:
                self.ids.add(v)
            if k in ("src", "href") and v and not v.startswith("#"):
                self.urls.append(v)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("report")
    subject = tiny_audit_subject()
    sae = planted_sae(subject, {0: {"she", "her", "woman"}}, n_random=8)
    db = open_database(f"sqlite:///{tmp / 'r.db'}")
    res = run_audit(audit_ctx(db, subject, sae), pairs="builtin", out_dir=tmp / "out",
                    argv=["autolabel", "audit", EVIL])
    facts = json.loads(res.json_path.read_text())
    facts["flags"][0]["label"]["text"] = EVIL  # an LLM label
    facts["flags"][0]["pairs"][0]["sides"][0]["tokens"][1][0] = EVIL  # a pair token
    facts["flags"][0]["corpus"] = [{"tokens": [["a", 1.0], [EVIL, 2.0]], "max": 2.0}]
    html, _ = write_report(facts, tmp / "evil")
    return html, facts


def test_report_parses_and_has_every_section(report: tuple[Path, dict]) -> None:
    html = report[0].read_text()
    parser = _Collect()
    parser.feed(html)
    assert set(SECTIONS) <= parser.ids
    assert "script" not in parser.tags and "svg" in parser.tags
    assert parser.urls == []
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert "@media print" in html


def test_report_escapes_untrusted_text(report: tuple[Path, dict]) -> None:
    html = report[0].read_text()
    assert EVIL not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # label, 2 tokens, argv


def test_report_shows_orientation_replication_and_evidence(report: tuple[Path, dict]) -> None:
    html, facts = report[0].read_text(), report[1]
    gender = next(c for c in facts["results"]["per_category"] if c["category"] == "gender")
    assert gender["orientation"] == "poles" and gender["poles"] == ["female", "male"]
    assert gender["by_source"][0]["source"] == "builtin" and gender["n_unoriented"] == 0
    flag = next(f for c in facts["flags"] for f in c["flags"] if f["tier"] == 2)
    assert flag["replication"]["n_tested"] >= 2 and "replication" in flag["evidence"]
    for text in ("Orientation", "Replication", "d_z per source and template family",
                 "Counterfactual evidence", "Top corpus contexts", "Per pair source",
                 "Label verdicts"):
        assert text in html, text


def _png_is_not_blank(path: Path) -> bool:
    """Decode a non-interlaced 8-bit RGB(A) PNG with zlib and look for more than one colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, _h, depth, colour = struct.unpack(">IIBB", chunk[:10])
            channels = {2: 3, 6: 4}.get(colour, 0)
            if depth != 8 or not channels:
                return len(data) > 20_000
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    rows = {raw[i + 1:i + stride] for i in range(0, min(len(raw), stride * 400), stride)}
    return len(rows) > 5 and len(data) > 20_000


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report: tuple[Path, dict], tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1280,2000", report[0].resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.is_file() and _png_is_not_blank(shot)
