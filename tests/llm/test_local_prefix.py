"""KV-prefix reuse in LocalClient: the same generations as the naive prompt, fewer tokens.

A tiny random Gemma 3 (no download) with an attention window wider than the prompts; one slow
test on the offline Gemma 3 270M with the real explain prompts.
"""

from __future__ import annotations

import pytest
import torch

from autolabel.llm import LocalClient
from tests.llm.test_local import CORPUS

FIXED = ("the quick brown fox jumps over the lazy dog . the cat sat on the mat . "
         "a dog ran in the park . hello world , hello there . ")
TAILS = ["the cat", "numbers 1 2 3 4", "a dog ran in the", "hello", "the quick brown fox jumps",
         "numbers 0 1"]


def _tiny(reuse: bool, model: object = None, tokenizer: object = None) -> LocalClient:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    if model is None:
        raw = Tokenizer(models.BPE(unk_token="<unk>"))
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        raw.train_from_iterator(CORPUS, trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        raw.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", raw.token_to_id("<bos>"))])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>",
                                            eos_token="<eos>", bos_token="<bos>",
                                            unk_token="<unk>")
        torch.manual_seed(0)
        config = Gemma3TextConfig(
            vocab_size=raw.get_vocab_size(), hidden_size=32, intermediate_size=64,
            num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            max_position_embeddings=512, sliding_window=256, pad_token_id=0, eos_token_id=1,
            bos_token_id=2)
        model = Gemma3ForCausalLM(config)
    return LocalClient.from_model(model, tokenizer, "tiny", batch_size=4, reuse_prefix=reuse)


@pytest.fixture(scope="module")
def pair() -> tuple[LocalClient, LocalClient]:
    """(prefix reuse, naive) clients over one model."""
    reuse = _tiny(True)
    return reuse, _tiny(False, reuse.lm, reuse.tokenizer)


def test_prefix_reuse_generates_what_the_naive_prompt_does(
        pair: tuple[LocalClient, LocalClient]) -> None:
    reuse, naive = pair
    prompts = [FIXED + t for t in TAILS]
    fast = reuse.complete_many(prompts, max_tokens=12)
    slow = [naive.complete(p, max_tokens=12) for p in prompts]
    assert [c.text for c in fast] == [c.text for c in slow]
    assert [c.tokens_in for c in fast] == [c.tokens_in for c in slow]
    assert [c.tokens_out for c in fast] == [c.tokens_out for c in slow]
    assert reuse.prefix_stats["computed"] >= 1 and reuse.prefix_stats["tokens_saved"] > 0
    assert naive.prefix_stats == {"computed": 0, "reused": 0, "tokens_saved": 0}


def test_cached_prefix_serves_later_batches_and_single_prompts(
        pair: tuple[LocalClient, LocalClient]) -> None:
    reuse, naive = pair
    reuse.complete_many([FIXED + t for t in TAILS[:2]], max_tokens=4)
    computed = reuse.prefix_stats["computed"]
    later = reuse.complete_many([FIXED + t for t in TAILS[2:]], max_tokens=8)
    one = reuse.complete(FIXED + "the mat", max_tokens=8)
    assert reuse.prefix_stats["computed"] == computed  # no new prefix forward
    assert reuse.prefix_stats["reused"] >= 2
    assert [c.text for c in later] == [naive.complete(FIXED + t, max_tokens=8).text
                                       for t in TAILS[2:]]
    assert one.text == naive.complete(FIXED + "the mat", max_tokens=8).text


def test_sampling_and_stop_strings_work_on_a_prefix(
        pair: tuple[LocalClient, LocalClient]) -> None:
    reuse, _ = pair
    prompts = [FIXED + t for t in TAILS[:3]]
    a = reuse.complete_many(prompts, max_tokens=10, temperature=1.2, seed=3)
    b = reuse.complete_many(prompts, max_tokens=10, temperature=1.2, seed=3)
    assert [c.text for c in a] == [c.text for c in b]
    cut = reuse.complete_many(prompts, max_tokens=10, stop=[" "])
    assert all(" " not in c.text for c in cut)


def test_no_reuse_beyond_the_sliding_window(pair: tuple[LocalClient, LocalClient]) -> None:
    reuse, naive = pair
    long_fixed = FIXED * 6  # ~300 tokens: rows + generation exceed the 256-token window
    before = dict(reuse.prefix_stats)
    prompts = [long_fixed + t for t in TAILS[:2]]
    got = reuse.complete_many(prompts, max_tokens=4)
    assert reuse.prefix_stats["computed"] == before["computed"]
    assert [c.text for c in got] == [naive.complete(p, max_tokens=4).text for p in prompts]
