"""Fakes shared by the scoring tests: a chat-only capability set, a logprob table whose slots
carry fixed digits, and an oracle simulator that reads the planted rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from autolabel.llm import Capabilities, LocalClient, TokenLogprob
from autolabel.scoring.planted import planted_features
from tests.tiny import SPECIALS, WORDS

CHAT_ONLY = Capabilities(chat=True, completions=True, echo_logprobs=False, max_top_logprobs=0)


def slot_table(value: dict[str, float]) -> Callable[[str], list[TokenLogprob]]:
    """A fake logprob table: whitespace-led words; every '\\t?' slot carries ``value``."""
    def table(prompt: str) -> list[TokenLogprob]:
        words = re.findall(r"\s*\S+", prompt)
        return [TokenLogprob(w, None if i == 0 else -1.0,
                             dict(value) if w == "\t?" else {w: -1.0})
                for i, w in enumerate(words)]
    return table


class OracleSimulator:
    """Predicts with the planted rule whose description it is given (a perfect reader)."""

    name = "oracle"

    def predict(self, explanation: str, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        rule = {f.description: f.rule for f in planted_features()}[explanation]
        return [np.array([9.0 * rule(t) for t in s]) for s in sequences]


def tiny_local_client(sliding_window: int = 16) -> LocalClient:
    """A random tiny Gemma 3 with a word-level tokenizer that keeps tabs, newlines, digits."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    extra = list("0123456789") + ["\t", "\n", " ", "?", ".", ",", ":", '"', "<", ">"]
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS + extra)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|\s|[^\w\s]"), behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        sliding_window=sliding_window, max_position_embeddings=4096, pad_token_id=0,
        bos_token_id=2, eos_token_id=1)
    return LocalClient.from_model(Gemma3ForCausalLM(config).eval(), tok, "tiny")


class CountingBackend:
    """An in-process LLM backend that counts every time its model or tokenizer is reached.

    With ``real`` it forwards to that client (a working simulator); without, reaching the
    model fails the test: proof that building scorers and skipping scored work load nothing.
    """

    provider = "local"

    def __init__(self, model: str, real: LocalClient | None = None) -> None:
        self.model, self.real, self.loads = model, real, 0

    def local_backend(self) -> CountingBackend:
        return self

    def capabilities(self) -> Capabilities:
        return Capabilities(chat=True, completions=True, echo_logprobs=True,
                            max_top_logprobs=50)

    def _reach(self, what: str) -> Any:
        self.loads += 1
        if self.real is None:
            raise AssertionError(f"the LLM's {what} was loaded")
        return getattr(self.real, what)

    @property
    def lm(self) -> Any:
        return self._reach("lm")

    @property
    def tokenizer(self) -> Any:
        return self._reach("tokenizer")
