"""Tiny real artefacts for end-to-end tests: a saved Gemma3 model dir with a word-level
tokenizer, a saved sae-lens SAE, and a small text corpus. Built in milliseconds, no download."""

from __future__ import annotations

from pathlib import Path

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
_TEXT = (
    "the a of in on and to is was for with by at from january february march april may june "
    "july august september october november december cat dog river city king queen she he her "
    "his woman man meeting storm rain snow paris france london england one two three four five "
    "six seven eight nine ten table chair red green blue house car bus train moved because "
    "weather cold warm year day night book letter court law case judge"
)
WORDS = _TEXT.split()
HIDDEN = 64


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over WORDS; unknown words map to <unk>."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def tiny_model_dir(path: Path, seed: int = 0) -> Path:
    """A random 4-layer Gemma 3 saved with its tokenizer, loadable by `load_subject(dir)`."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(SPECIALS) + len(WORDS), hidden_size=HIDDEN, intermediate_size=128,
        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        sliding_window=16, max_position_embeddings=256, pad_token_id=0, bos_token_id=2,
        eos_token_id=1,
    )
    Gemma3ForCausalLM(config).eval().save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return path


def tiny_sae_dir(path: Path, layer: int = 2, d_sae: int = 32, seed: int = 0) -> Path:
    """A random JumpReLU SAE (zero thresholds, so about half the latents fire) for the model."""
    torch.manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=HIDDEN, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.threshold.zero_()
    sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    sae.cfg.metadata.model_name = "tiny"
    sae.save_model(str(path))
    return path


def tiny_corpus(path: Path, n_docs: int = 60) -> Path:
    """Blank-line separated documents made of WORDS (deterministic)."""
    gen = torch.Generator().manual_seed(1)
    docs = []
    for _ in range(n_docs):
        ids = torch.randint(0, len(WORDS), (int(torch.randint(20, 90, (1,), generator=gen)),),
                            generator=gen)
        docs.append(" ".join(WORDS[i] for i in ids.tolist()))
    path.write_text("\n\n".join(docs) + "\n")
    return path


def tiny_bytelevel_model_dir(path: Path, texts: list[str], seed: int = 0) -> Path:
    """A random 4-layer Gemma 3 whose tokenizer is byte-level BPE trained on ``texts``: unlike
    the word-level one it round-trips any bytes (control characters, markup, formulas), which
    is what hostile-input tests need."""
    from tokenizers import decoders, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*texts, _TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=HIDDEN, intermediate_size=128,
        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        sliding_window=16, max_position_embeddings=256, pad_token_id=0, bos_token_id=2,
        eos_token_id=1,
    )
    Gemma3ForCausalLM(config).eval().save_pretrained(str(path))
    fast.save_pretrained(str(path))
    return path
