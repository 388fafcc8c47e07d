"""All-at-once simulation in-process, the shared prefix computed once per feature.

One prompt holds instructions, few-shot neurons, the explanation and the sequence with one ``?``
slot per token; the prediction is the expected digit (0-9) at each slot. The prefix is run once
per feature and its KV cache reused for a batch of all the feature's sequences; only the ten
digit rows of the LM head are ever computed.

Nothing is loaded when the simulator is built: its name (which keys stored scores) and its
sanity-cache identity come from the model's name and on-disk revision, and the model itself is
touched on the first ``predict``, so a score stage with nothing to do never loads it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from autolabel.errors import ConfigError
from autolabel.scoring.simulators import (
    LOGPROB_TEMPLATE,
    PLACEHOLDER,
    display_token,
    simulation_prefix,
)
from autolabel.scoring.types import DIGITS
from autolabel.subject import known_revision

if TYPE_CHECKING:
    from autolabel.llm import LLMClient, LocalClient


class LocalLogprobSimulator:
    """All-at-once simulation in-process: prefix once, its KV cache shared by a batch.

    Per feature: one forward over the prefix (instructions, few-shot, explanation), then the
    sequences in batches of ``batch_size`` (right-padded; padding sits after every real token,
    so the causal mask keeps it invisible) on top of a copy of that cache expanded over the
    batch. The LM head is applied only to the slot positions and only for the digit rows: the
    softmax renormalised over the digits needs nothing else.
    """

    template = LOGPROB_TEMPLATE

    def __init__(self, client: LLMClient | LocalClient, *, batch_size: int = 32) -> None:
        backend = client.local_backend()
        if backend is None:
            raise ConfigError(f"LocalLogprobSimulator needs an in-process model, and the LLM "
                              f"{client.model!r} is a server; use EchoLogprobSimulator")
        self.backend = backend
        self.name = f"llm-logprob:{backend.model}"
        self.batch_size = batch_size
        self.tokens_processed = 0  # simulator input tokens, padding included
        self._pieces: dict[str, list[int]] = {}

    @cached_property
    def revision(self) -> str | None:
        """The weights' revision read from disk (a file hash / marker), never by loading."""
        return known_revision(self.backend.model)

    @property
    def lm(self) -> Any:
        """The causal LM (the backend loads it on first access)."""
        return self.backend.lm

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (the backend loads it on first access)."""
        return self.backend.tokenizer

    @cached_property
    def digit_ids(self) -> list[int]:
        """The ten digit tokens' ids: the only LM-head rows a prediction needs."""
        ids = [self._single_id(d) for d in DIGITS]
        if len(set(ids)) != len(DIGITS):
            raise ConfigError("the simulator's tokenizer has no distinct tokens for the digits "
                              "0-9; use another simulator model or scoring.simulator=embedding")
        return ids

    def _encode(self, text: str) -> list[int]:
        if text not in self._pieces:
            self._pieces[text] = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        return self._pieces[text]

    def _single_id(self, digit: str) -> int:
        ids = self.tokenizer(digit, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ConfigError(f"the simulator's tokenizer splits {digit!r} into {len(ids)} "
                              "tokens; use a model whose digits are single tokens")
        return int(ids[0])

    def prefix_ids(self, explanation: str) -> list[int]:
        """BOS + the rendered prefix: the part every sequence of a feature shares."""
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + self._encode(simulation_prefix(explanation))

    def suffix_ids(self, tokens: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of the sequence lines, and the index of the position that predicts each
        slot (the tab before it). Built piece by piece so slots never merge with neighbours."""
        tab, slot, nl = (self._encode(x) for x in ("\t", PLACEHOLDER, "\n"))
        ids: list[int] = []
        slots: list[int] = []
        for tok in tokens:
            ids += self._encode(display_token(tok)) + tab
            slots.append(len(ids) - 1)
            ids += slot + nl
        return ids, slots

    def predict(self, explanation: str, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        prefix = self.prefix_ids(explanation)
        suffixes = [self.suffix_ids(s) for s in sequences]
        out: list[np.ndarray] = [np.zeros(0)] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(suffixes[i][0]))
        with torch.inference_mode():
            cache = self._prefix_cache(prefix)
            for start in range(0, len(order), self.batch_size):
                chunk = [i for i in order[start:start + self.batch_size] if suffixes[i][1]]
                for i, pred in zip(chunk, self._batch(cache, len(prefix),
                                                      [suffixes[i] for i in chunk]), strict=True):
                    out[i] = pred
        return out

    def _prefix_cache(self, prefix: list[int]) -> Any:
        from transformers import DynamicCache  # heavy (~5 s import): only when a model runs

        ids = self._tensor([prefix])
        cache = DynamicCache(config=self.lm.config)
        self.lm.model(input_ids=ids, past_key_values=cache, use_cache=True)
        self.tokens_processed += len(prefix)
        return cache

    def _batch(self, prefix_cache: Any, n_prefix: int,
               items: list[tuple[list[int], list[int]]]) -> list[np.ndarray]:
        """One forward of a right-padded batch of sequences over a copy of the prefix cache."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        if not items:
            return []
        width = max(len(ids) for ids, _ in items)
        pad = self.tokenizer.pad_token_id or 0
        ids = self._tensor([row + [pad] * (width - len(row)) for row, _ in items])
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(items))
        positions = torch.arange(n_prefix, n_prefix + width, device=ids.device)
        mask = torch.ones(len(items), n_prefix + width, dtype=torch.long, device=ids.device)
        hidden = self.lm.model(input_ids=ids, past_key_values=cache, use_cache=True,
                               attention_mask=mask,
                               position_ids=positions.expand(len(items), -1)).last_hidden_state
        self.tokens_processed += len(items) * width
        return [self._digits_ev(hidden[b, slots]) for b, (_, slots) in enumerate(items)]

    def _digits_ev(self, hidden: Any) -> np.ndarray:
        """Expected digit from hidden states at slots: only the 10 digit logits are computed."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        weight = self.lm.get_output_embeddings().weight[self.digit_ids]
        logits = (hidden.to(weight.dtype) @ weight.T).float()
        cap = getattr(self.lm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        probs = torch.softmax(logits, dim=-1)
        return (probs @ torch.arange(10, dtype=torch.float32, device=probs.device)).cpu().numpy()

    def _tensor(self, rows: list[list[int]]) -> Any:
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        return torch.tensor(rows, dtype=torch.long, device=next(self.lm.parameters()).device)

    def predict_naive(self, explanation: str,
                      sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Reference: the full prompt per sequence, full LM head and softmax, no cache reuse.
        Used by the tests (KV reuse must match it) and the cost benchmark."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        prefix = self.prefix_ids(explanation)
        out = []
        with torch.inference_mode():
            for tokens in sequences:
                ids, slots = self.suffix_ids(tokens)
                logits = self.lm(input_ids=self._tensor([prefix + ids])).logits[0].float()
                logp = torch.log_softmax(logits, dim=-1)[[len(prefix) + s for s in slots]]
                table = logp[:, self.digit_ids]
                probs = torch.softmax(table, dim=-1)  # renormalised over the digits
                digits = torch.arange(10.0, device=probs.device)
                out.append((probs @ digits).cpu().numpy())
                self.tokens_processed += len(prefix) + len(ids)
        return out
