"""Subject model: truncation, padding invariance, layer validation, loading errors, real Gemma."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from autolabel.errors import InputError, ModelError
from autolabel.subject import SubjectModel, load_subject, subject_from_model

VOCAB = 512


def tiny_gemma(seed: int = 0) -> Gemma3ForCausalLM:
    """A random 4-layer Gemma 3 (hidden 64): same code path as the real model, in milliseconds."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
        max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )
    return Gemma3ForCausalLM(config).eval()


def tiny_tokenizer() -> SimpleNamespace:
    """Just the special-token attributes SubjectModel reads."""
    return SimpleNamespace(bos_token_id=2, eos_token_id=1, pad_token_id=0,
                           all_special_ids=[0, 1, 2])


def tiny_subject(layer: int = 2, seed: int = 0) -> SubjectModel:
    return subject_from_model(tiny_gemma(seed), tiny_tokenizer(), layer, model_id="tiny-gemma")


def test_resid_shape_and_hook_name() -> None:
    subject = tiny_subject(layer=2)
    ids = torch.randint(3, VOCAB, (3, 10))
    out = subject.resid(ids, torch.ones_like(ids))
    assert out.shape == (3, 10, 64) and out.dtype == torch.float32
    assert subject.hook_name == "blocks.2.hook_resid_post"
    assert (subject.n_layers, subject.d_model, len(subject.model.layers)) == (4, 64, 3)
    assert subject.special_token_ids == {0, 1, 2}


def test_resid_equals_output_of_layer_l_in_full_model() -> None:
    """Truncation must give exactly hidden_states[L+1] of the untouched model (no final norm)."""
    full = tiny_gemma(seed=1)
    ids = torch.randint(3, VOCAB, (2, 12))
    with torch.no_grad():
        states = full(input_ids=ids, output_hidden_states=True).hidden_states
    subject = subject_from_model(tiny_gemma(seed=1), tiny_tokenizer(), layer=1)
    torch.testing.assert_close(subject.resid(ids, torch.ones_like(ids)), states[2])


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_does_not_change_real_tokens(side: str) -> None:
    subject = tiny_subject(layer=3)
    long = torch.randint(3, VOCAB, (1, 20))
    short = torch.randint(3, VOCAB, (1, 13))
    alone = [subject.resid(x, torch.ones_like(x))[0] for x in (long, short)]
    pad = torch.zeros(1, 7, dtype=torch.long)
    padded = torch.cat([short, pad], 1) if side == "right" else torch.cat([pad, short], 1)
    mask = (padded != 0).long() if side == "right" else torch.cat([pad, torch.ones_like(short)], 1)
    batch = subject.resid(torch.cat([long, padded]), torch.cat([torch.ones_like(long), mask]))
    torch.testing.assert_close(batch[0], alone[0], atol=1e-4, rtol=1e-4)
    real = mask[0].bool()
    torch.testing.assert_close(batch[1][real], alone[1], atol=1e-4, rtol=1e-4)
    assert batch[1][~real].abs().sum() == 0


@pytest.mark.parametrize("layer", [-1, 4, 99])
def test_layer_out_of_range_names_valid_range(layer: int) -> None:
    with pytest.raises(InputError, match=r"from 0 to 3") as info:
        tiny_subject(layer=layer)
    assert "\n" not in str(info.value)


def test_local_directory_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save_pretrained directory loads through load_subject (tokenizer from a tiny BPE)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "t3")),
                                  bos_token="t2", eos_token="t1", pad_token="t0")
    tiny_gemma(seed=3).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    subject = load_subject(str(tmp_path), layer=1, device="cpu")
    ids = torch.randint(3, VOCAB, (2, 8))
    assert subject.resid(ids, torch.ones_like(ids)).shape == (2, 8, 64)
    assert subject.revision and subject.revision.startswith("local:")
    assert {0, 1, 2} <= subject.special_token_ids


def test_missing_paths_and_bad_dirs_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_subject(str(tmp_path / "nope.gguf"))
    with pytest.raises(InputError, match="config.json"):
        load_subject(str(tmp_path))
    with pytest.raises(InputError, match="dtype"):
        load_subject(str(tmp_path), dtype="float7")


def test_hub_id_offline_is_one_line_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot download") as info:
        load_subject("google/gemma-3-270m", layer=6, device="cpu")
    message = str(info.value)
    assert "\n" not in message and "local" in message


@pytest.mark.slow
def test_real_gemma_layer6() -> None:
    """The offline default: converted once under the cache, then loaded in seconds."""
    load_subject(layer=6)  # make sure the converted copy exists
    start = time.perf_counter()
    subject = load_subject(layer=6, device="cpu")
    assert time.perf_counter() - start < 60
    assert (subject.d_model, subject.n_layers, len(subject.model.layers)) == (640, 18, 7)
    assert subject.revision and subject.revision.startswith("gguf-sha256:")
    batch = subject.tokenizer(["The cat sat on the mat.", "Paris is the capital of France."],
                              return_tensors="pt", padding=True)
    out = subject.resid(batch["input_ids"], batch["attention_mask"])
    assert out.shape[-1] == 640 and torch.isfinite(out).all()
    real = batch["attention_mask"].bool() & (batch["input_ids"] != subject.tokenizer.bos_token_id)
    norms = out[real].norm(dim=-1)
    assert 500 < norms.mean().item() < 20_000  # DESIGN.md §5: mean ~3,300 at layer 6
