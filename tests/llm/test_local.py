"""LocalClient on a tiny random Gemma 3 (no download); the offline Gemma 3 270M (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autolabel.db import Database
from autolabel.llm import LocalClient, RecordingClient
from tests.llm.helpers import rows
from tests.tiny import tiny_model_dir

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "numbers 0 1 2 3 4 5 6 7 8 9 10",
          "the quick brown fox jumps over the lazy dog", "hello world, hello there"]


@pytest.fixture(scope="module")
def tiny_local() -> LocalClient:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    raw.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", raw.token_to_id("<bos>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>",
                                        eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=raw.get_vocab_size(), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=128, sliding_window=16, pad_token_id=0, eos_token_id=1,
        bos_token_id=2)
    return LocalClient.from_model(Gemma3ForCausalLM(config), tokenizer, "tiny", batch_size=3)


def test_local_batched_generation_equals_unbatched(tiny_local: LocalClient) -> None:
    prompts = ["the cat", "a dog ran in the", "hello", "numbers 1 2 3", "the quick brown fox"]
    batched = tiny_local.complete_many(prompts, max_tokens=6)
    single = [tiny_local.complete(p, max_tokens=6) for p in prompts]
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.tokens_in for c in batched] == [c.tokens_in for c in single]
    assert all(c.tokens_out <= 6 and c.cost == 0.0 for c in batched)
    assert batched[0].tokens_in == len(tiny_local.tokenizer("the cat").input_ids)


def test_local_sampling_is_seeded(tiny_local: LocalClient) -> None:
    a = tiny_local.complete("the", max_tokens=8, temperature=1.5, seed=7)
    b = tiny_local.complete("the", max_tokens=8, temperature=1.5, seed=7)
    assert a.text == b.text


def test_local_stop_strings_cut_the_reply(tiny_local: LocalClient) -> None:
    full = tiny_local.complete("the cat", max_tokens=8).text
    if len(full) < 2:
        pytest.skip("tiny model produced too little text to cut")
    cut = tiny_local.complete("the cat", max_tokens=8, stop=[full[1:3]])
    assert cut.text == full[: full.find(full[1:3])] and cut.finish_reason == "stop"


def test_local_prompt_logprobs_match_log_softmax(tiny_local: LocalClient) -> None:
    prompt = "the cat sat on the mat"
    done = tiny_local.prompt_logprobs(prompt, top_logprobs=5)
    ids = tiny_local.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = torch.log_softmax(tiny_local.lm(input_ids=ids).logits[0].float(), dim=-1)
    tokens = done.prompt_logprobs
    assert tokens is not None and len(tokens) == ids.shape[1] == done.tokens_in
    assert tokens[0].logprob is None and tokens[0].token == "<bos>"
    assert "".join(t.token for t in tokens[1:]) == prompt
    for pos in range(1, ids.shape[1]):
        assert tokens[pos].logprob == pytest.approx(float(expected[pos - 1, ids[0, pos]]), abs=1e-5)
        assert 1 <= len(tokens[pos].top) <= 5  # ids that decode alike (byte pieces) merge
        assert max(tokens[pos].top.values()) == pytest.approx(float(expected[pos - 1].max()),
                                                              abs=1e-5)


def test_local_chat_and_recording_batches(tiny_local: LocalClient, database: Database) -> None:
    reply = tiny_local.chat([{"role": "user", "content": "hello"}], max_tokens=3)
    assert reply.tokens_out <= 3
    client = RecordingClient(tiny_local, database)
    first = client.complete_many(["the cat", "hello"], max_tokens=3)
    again = client.complete_many(["hello", "the cat", "a dog"], max_tokens=3)
    assert [c.cached for c in again] == [True, True, False]
    assert again[1].text == first[0].text and len(rows(database)) == 3


def test_local_client_loads_on_first_use(tmp_path: Path) -> None:
    """Building, naming and asking capabilities are free; the first request loads once."""
    model_dir = tiny_model_dir(tmp_path / "tiny")
    client = LocalClient(str(model_dir), batch_size=2)
    caps = client.capabilities()
    assert client.model == str(model_dir) and client.provider == "local"
    assert caps.chat and caps.completions and caps.echo_logprobs and caps.max_top_logprobs >= 10
    assert client.local_backend() is client and client.breaker_open is False
    assert not client.loaded and client.revision is None
    done = client.complete("the cat", max_tokens=2)
    assert client.loaded and done.tokens_out <= 2
    assert client.revision is not None and client.revision.startswith("local:")
    lm = client.lm
    client.complete("a dog", max_tokens=2)
    assert client.lm is lm  # loaded once, kept


@pytest.mark.slow
def test_local_default_gemma_generates() -> None:
    client = LocalClient(batch_size=2)
    assert client.model == "gemma-3-270m"
    out = client.complete_many(["The capital of France is", "1, 2, 3, 4,"], max_tokens=4)
    assert all(c.tokens_out > 0 and c.text.strip() for c in out)
    assert "5" in out[1].text
    logprobs = client.prompt_logprobs("The cat sat on the mat", top_logprobs=3).prompt_logprobs
    assert logprobs is not None and logprobs[0].logprob is None
    assert "".join(t.token for t in logprobs[1:]) == "The cat sat on the mat"
