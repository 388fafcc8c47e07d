"""Document sources: local files and globs, the hub, the built-ins, fingerprints."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autolabel.corpus import (
    BUILTIN_SOURCES,
    MAX_PIECE_CHARS,
    Document,
    corpus_fingerprint,
    iter_documents,
)
from autolabel.errors import CorpusError
from tests.corpus.files import write_txt

# ------------------------------------------------------------------ local files


def test_txt_paragraphs_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("first para\nstill first\n\n\nsecond\n\n   \nthird", encoding="utf-8")
    docs = list(iter_documents(str(path)))
    assert docs == [
        Document("notes.txt:1", "first para\nstill first"),
        Document("notes.txt:5", "second"),
        Document("notes.txt:8", "third"),
    ]


def test_jsonl_with_text_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"body": "alpha", "n": 1}, {"body": ""}, {"body": "gamma"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    docs = list(iter_documents(str(path), text_field="body"))
    assert docs == [Document("d.jsonl:1", "alpha"), Document("d.jsonl:3", "gamma")]
    with pytest.raises(CorpusError, match=r"no field 'text' \(available: 'body', 'n'\)"):
        list(iter_documents(str(path)))


def test_jsonl_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"d.jsonl:2 is not valid JSON"):
        list(iter_documents(str(path)))


def test_csv_with_text_field(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "content"])
        writer.writerows([["1", "one, with comma"], ["2", "two\nlines"], ["3", " "]])
    docs = list(iter_documents(str(path), text_field="content"))
    assert docs == [Document("d.csv:0", "one, with comma"), Document("d.csv:1", "two\nlines")]
    with pytest.raises(CorpusError, match="available: 'id', 'content'"):
        list(iter_documents(str(path)))


def test_parquet_with_text_field(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    table = pa.table({"txt": ["first", None, "third"] * 1000, "k": list(range(3000))})
    pq.write_table(table, path, row_group_size=700)
    docs = list(iter_documents(str(path), text_field="txt"))
    assert len(docs) == 2000
    assert docs[:2] == [Document("d.parquet:0", "first"), Document("d.parquet:2", "third")]
    assert docs[-1].id == "d.parquet:2999"
    with pytest.raises(CorpusError, match="available: 'txt', 'k'"):
        list(iter_documents(str(path)))


def test_glob_over_mixed_files(tmp_path: Path) -> None:
    sub = tmp_path / "data" / "more"
    sub.mkdir(parents=True)
    write_txt(tmp_path / "data" / "b.txt", ["bee"])
    write_txt(sub / "a.txt", ["ay"])
    (tmp_path / "data" / "c.jsonl").write_text('{"text": "sea"}\n', encoding="utf-8")
    (tmp_path / "data" / "skip.md").write_text("ignored", encoding="utf-8")
    docs = list(iter_documents(str(tmp_path / "data" / "**" / "*.*")))
    assert [d.id for d in docs] == ["b.txt:1", "c.jsonl:1", "more/a.txt:1"]
    assert [d.text for d in docs] == ["bee", "sea", "ay"]


def test_ids_do_not_depend_on_location(tmp_path: Path) -> None:
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        write_txt(tmp_path / name / "a.txt", ["same text"])
    first = list(iter_documents(str(tmp_path / "x" / "*.txt")))
    second = list(iter_documents(str(tmp_path / "y" / "a.txt")))
    assert first == second


def test_local_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        list(iter_documents(str(tmp_path / "missing.txt")))
    with pytest.raises(CorpusError, match="matches no"):
        list(iter_documents(str(tmp_path / "*.jsonl")))
    with pytest.raises(CorpusError, match="Unknown corpus 'wikipedia'.*hf:NAME"):
        list(iter_documents("wikipedia"))
    bad = tmp_path / "latin.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        list(iter_documents(str(bad)))


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    for spec in ("nope", str(tmp_path / "missing.csv"), "hf:"):
        with pytest.raises(CorpusError) as info:
            list(iter_documents(spec))
        assert "\n" not in str(info.value)


def test_fingerprints(tmp_path: Path) -> None:
    path = write_txt(tmp_path / "a.txt", ["one"])
    first = corpus_fingerprint(str(path))
    assert first.startswith("sha256:") and first == corpus_fingerprint(str(path))
    assert corpus_fingerprint(str(path), text_field="body") != first
    write_txt(path, ["two"])
    assert corpus_fingerprint(str(path)) != first
    assert corpus_fingerprint("hf:wikitext:wikitext-2-raw-v1") == "hf:wikitext:wikitext-2-raw-v1"
    assert corpus_fingerprint("wikipedia-sample").startswith("wikipedia-sample@gensim-")
    assert corpus_fingerprint("python-docs").startswith("python-docs@python-3.")


# ------------------------------------------------------------------ hub


def test_hf_offline_fails_fast_with_one_line() -> None:
    code = (
        "from autolabel.corpus import iter_documents\n"
        "from autolabel.errors import CorpusError\n"
        "try:\n    next(iter_documents('hf:wikitext:wikitext-2-raw-v1'))\n"
        "except CorpusError as e:\n    print('ERR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("ERR")]
    assert len(lines) == 1, out.stdout + out.stderr
    assert "unreachable" in lines[0] and "local file" in lines[0]


def test_hf_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(CorpusError, match=r"hub \(127.0.0.1:9\) is unreachable"):
        next(iter_documents("hf:some/dataset"))


# ------------------------------------------------------------------ built-ins


def test_builtin_sources_listed() -> None:
    assert BUILTIN_SOURCES == ("wikipedia-sample", "python-docs")


def test_python_docs_yields_many_documents() -> None:
    docs = list(iter_documents("python-docs"))
    assert len(docs) > 50
    assert len({d.id for d in docs}) == len(docs)
    assert all(d.id.startswith("python-docs:") and d.text for d in docs)
    assert sum(len(d.text) for d in docs) > 200_000


def test_wikipedia_sample_is_clean_prose() -> None:
    docs = list(iter_documents("wikipedia-sample"))
    ids = [d.id for i, d in enumerate(docs) if i == 0 or docs[i - 1].id != d.id]
    assert len(set(ids)) == len(ids)  # long articles come in consecutive pieces of one id
    assert len(ids) < len(docs) and max(len(d.text) for d in docs) <= MAX_PIECE_CHARS
    wiki = [d for d in docs if d.id.startswith("wikipedia-sample:enwiki:")]
    news = [d for d in docs if d.id.startswith("wikipedia-sample:lee")]
    assert len(wiki) > 100 and len(news) == 350
    for doc in docs:
        for markup in ("[[", "]]", "{{", "}}", "<ref", "'''", "{|"):
            assert markup not in doc.text, (doc.id, markup)
    assert sum(len(d.text) for d in docs) > 2_500_000
    assert any("Asia" in d.text for d in wiki)
