"""SAEs: local round trip, content hashes, registry errors offline, fit checks, training."""

from __future__ import annotations

import bz2
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import gensim
import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig

from autolabel.errors import SAEError
from autolabel.saes import check_fits, default_sae_dir, load_sae, train_sae
from autolabel.subject import SubjectModel
from tests.test_subject import VOCAB, tiny_subject

WIKI = (Path(gensim.__file__).parent / "test" / "test_data"
        / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


@pytest.fixture(autouse=True)
def _temp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOLABEL_CACHE_DIR", str(tmp_path / "cache"))


def random_batches(n_batches: int = 1000, batch: int = 8, window: int = 32,
                   seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Random token windows, BOS first, the last 4 positions of every other row padded."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        ids = torch.randint(3, VOCAB, (batch, window), generator=gen)
        ids[:, 0] = 2
        mask = torch.ones_like(ids)
        mask[::2, -4:] = 0
        ids[mask == 0] = 0
        yield ids, mask


def save_tiny_sae(path: Path, d_in: int = 64, d_sae: int = 128,
                  hook: str = "blocks.2.hook_resid_post") -> JumpReLUSAE:
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_name = "tiny-gemma"
    sae.save_model(str(path))
    return sae


def test_local_round_trip_and_stable_hash(tmp_path: Path) -> None:
    original = save_tiny_sae(tmp_path / "sae")
    first, second = load_sae(str(tmp_path / "sae"), "cpu"), load_sae(str(tmp_path / "sae"), "cpu")
    assert first.content_hash == second.content_hash and len(first.content_hash) == 64
    assert (first.d_in, first.d_sae, first.hook_name) == (64, 128, "blocks.2.hook_resid_post")
    assert (first.architecture, first.model_id, first.release) == ("jumprelu", "tiny-gemma", None)
    x = torch.randn(5, 64)
    torch.testing.assert_close(first.encode(x), original.encode(x).detach())
    with torch.no_grad():
        first.sae.W_enc.add_(1.0)
    first.sae.save_model(str(tmp_path / "changed"))
    assert load_sae(str(tmp_path / "changed")).content_hash != first.content_hash


def test_directory_without_sae_files_is_sae_error(tmp_path: Path) -> None:
    with pytest.raises(SAEError, match="cfg.json"):
        load_sae(str(tmp_path))


@pytest.mark.parametrize("spec", ["gemma-scope-2-270m-pt-res:layer_9_width_16k_l0_medium",
                                  "gemma-scope-2-270m-pt-res/layer_9_width_16k_l0_medium"])
def test_registry_spec_offline_is_one_line_sae_error(spec: str, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SAEError, match="cannot download SAE") as info:
        load_sae(spec, "cpu")
    message = str(info.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and "sae train" in message


@pytest.mark.parametrize(("spec", "match"), [
    ("no-such-release:x", "unknown sae-lens release"),
    ("gemma-scope-2-270m-pt-res:layer_99", "has no SAE"),
    ("justaword", "neither an existing directory"),
])
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(SAEError, match=match):
        load_sae(spec, "cpu")


def test_check_fits_names_both_sides(tmp_path: Path) -> None:
    subject = tiny_subject(layer=2)
    save_tiny_sae(tmp_path / "ok")
    check_fits(load_sae(str(tmp_path / "ok")), subject)
    save_tiny_sae(tmp_path / "wide", d_in=32)
    with pytest.raises(SAEError, match=r"d_in=32.*d_model=64"):
        check_fits(load_sae(str(tmp_path / "wide")), subject)
    save_tiny_sae(tmp_path / "layer", hook="blocks.1.hook_resid_post")
    with pytest.raises(SAEError, match=r"blocks\.1\.hook_resid_post.*blocks\.2\.hook_resid_post"):
        check_fits(load_sae(str(tmp_path / "layer")), subject)
    save_tiny_sae(tmp_path / "mlp", hook="blocks.2.hook_mlp_out")
    with pytest.raises(SAEError, match="hook_mlp_out"):
        check_fits(load_sae(str(tmp_path / "mlp")), subject)


@pytest.mark.parametrize("architecture", ["batchtopk", "topk"])
def test_train_tiny_sae_is_loadable(tmp_path: Path, architecture: str) -> None:
    subject = tiny_subject(layer=2)
    calls: list[tuple[int, int]] = []
    out = tmp_path / "trained"
    report = train_sae(subject, random_batches(), out, d_sae=128, k=8, architecture=architecture,
                       n_train_tokens=4096, n_eval_tokens=1024,
                       progress=lambda done, total: calls.append((done, total)))
    assert report.path == out and report.n_train_tokens == 4096 and report.n_eval_tokens == 1024
    for value in (report.explained_variance, report.l0, report.dead_fraction):
        assert value == value and abs(value) < 1e6  # finite
    assert 0 <= report.dead_fraction <= 1 and report.l0 > 0
    assert calls[-1][0] == calls[-1][1] == 2 * 4096 + 1024
    loaded = load_sae(str(out))
    check_fits(loaded, subject)
    assert loaded.model_id == "tiny-gemma" and loaded.d_sae == 128
    assert loaded.architecture == architecture
    assert json.loads((out / "training_report.json").read_text())["d_sae"] == 128
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_saved_sae_encodes_raw_residuals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gemma-like residuals (huge, mostly a constant offset): the saved SAE must take them raw.

    The scale and the mean are folded into the weights; if either were lost, the reconstruction
    would be off by orders of magnitude and explained variance hugely negative.
    """
    subject = tiny_subject(layer=2)
    offset = torch.randn(64, generator=torch.Generator().manual_seed(1)) * 3000
    plain = subject.resid
    monkeypatch.setattr(subject, "resid", lambda ids, mask: plain(ids, mask) * 300 + offset)
    report = train_sae(subject, random_batches(), tmp_path / "s", d_sae=256, k=16,
                       n_train_tokens=8192, n_eval_tokens=2048)
    sae = SAE.load_from_disk(str(tmp_path / "s"))
    assert sae.cfg.normalize_activations == "none"
    ids, mask = next(random_batches(seed=5))
    x = subject.resid(ids, mask)[mask.bool() & (ids != 2)]
    recon = sae.decode(sae.encode(x)).detach()
    ev = 1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert ev > 0.05 and report.explained_variance > 0.05
    assert 0.9 < (recon.norm(dim=-1).mean() / x.norm(dim=-1).mean()).item() < 1.1


def test_corpus_too_small_is_sae_error(tmp_path: Path) -> None:
    with pytest.raises(SAEError, match="ran out"):
        train_sae(tiny_subject(), random_batches(n_batches=2), tmp_path / "x", d_sae=64, k=4,
                  n_train_tokens=4096, n_eval_tokens=1024)


def test_default_sae_dir_under_cache(tmp_path: Path) -> None:
    subject = tiny_subject(layer=2)
    path = default_sae_dir(subject.model_id, subject.layer, d_sae=4096, k=32)
    assert path == tmp_path / "cache" / "saes" / "tiny-gemma-L2-topk4096-k32"


# ------------------------------------------------------------------------ real model (slow)


def wiki_texts() -> Iterator[str]:
    """Articles from the Wikipedia excerpt in gensim's wheel, with most wiki markup stripped."""
    with bz2.open(WIKI, "rt", encoding="utf-8") as fh:
        raw = fh.read()
    for body in re.findall(r"<text[^>]*>([\s\S]*?)</text>", raw):
        text = html.unescape(body)
        if text.lstrip().upper().startswith("#REDIRECT"):
            continue
        for _ in range(3):
            text = re.sub(r"\{\{[^{}]*\}\}", "", text)
        text = re.sub(r"\{\|[\s\S]*?\|\}", "", text)
        text = re.sub(r"<ref[^>]*/>|<ref[\s\S]*?</ref>|<[^>]+>", "", text)
        text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
        text = re.sub(r"'{2,}|^=+|=+$", "", text, flags=re.M)
        yield re.sub(r"\n{2,}", "\n", text).strip()


def wiki_batches(subject: SubjectModel, window: int = 64, batch: int = 32
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Full windows of ``window`` tokens, BOS first, articles in file order (so the held-out
    tokens come from later articles than the training tokens). 32 windows per forward: on
    this 2-core CPU the model ran at 930 tokens/s, against 750 with 8."""
    tok = subject.tokenizer
    rows: list[list[int]] = []
    for text in wiki_texts():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - window + 2, window - 1):
            rows.append([tok.bos_token_id, *ids[start:start + window - 1]])
            if len(rows) == batch:
                tensor = torch.tensor(rows)
                yield tensor, torch.ones_like(tensor)
                rows = []


@pytest.mark.slow
def test_train_default_sae_meets_bar(tmp_path: Path) -> None:
    """DESIGN.md bar for the offline default: EV >= 0.85, <= 25% dead. The 10-minute time bar
    is measured on an idle machine and recorded in benchmarks/RESULTS.md, not asserted here:
    the house rule forbids absolute-time assertions (CI machines are shared and noisy).

    The SAE is the default's (the first 200k tokens train it, whatever follows is held out).
    It is judged on the first 50k held-out tokens rather than the report's 100k, which saves
    a ~90 s forward pass in CI and can only make the dead share higher: a latent that never
    fires on 100k tokens never fires on the first 50k of them."""
    from autolabel.subject import load_subject

    torch.set_num_threads(2)
    subject = load_subject(layer=6, device="cpu")
    report = train_sae(subject, wiki_batches(subject), tmp_path / "sae", d_sae=4096, k=32,
                       n_train_tokens=200_000, n_eval_tokens=50_000)
    print(report)
    assert report.explained_variance >= 0.85
    assert report.dead_fraction <= 0.25
    loaded = load_sae(str(report.path), "cpu")
    check_fits(loaded, subject)
