"""A causal LM in this process (default: the offline Gemma 3 270M with its LM head).

The weights load on the first call that needs them, not when the client is built: a run whose
every request is answered from the ``llm_calls`` cache (or that has nothing to do) never pays
the load. ``.model``, ``.provider`` and :meth:`LocalClient.capabilities` are known up front.

Prompts built from one template share their instructions and few-shot part. Batched generation
runs that shared prefix once, keeps its KV cache (a few per client, reused by later batches)
and runs only the rest per prompt: the generations are those of the naive prompt (tested),
at a fraction of the prompt tokens.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from autolabel.llm.base import Capabilities, Completion, TokenLogprob, render_messages
from autolabel.subject import DEFAULT_MODEL, _load_hf, _pick_device, _pick_dtype

if TYPE_CHECKING:
    pass

# Any top-k is served (clipped to the vocabulary); the number is fixed so that it is known
# without loading the model, and only has to clear the simulators' threshold (10).
LOCAL_MAX_TOP_LOGPROBS = 1000
MIN_SHARED_PREFIX = 16  # tokens: a shorter shared prefix is not worth its own forward
PREFIX_SLACK = 32  # a cached prefix this much shorter than a batch's shared one still serves
MAX_CACHED_PREFIXES = 4


class LocalClient:
    """A causal LM in this process, loaded on the first call that needs it.

    Generation is batched with left padding; prompt logprobs are exact (one forward,
    log-softmax of the logits). ``.model`` is the model's name (as for every client); the
    torch module is ``.lm`` and its tokenizer ``.tokenizer`` (both load the model on first
    access), public so the simulation scorer can run its own batched forward over a
    shared-prefix KV cache.
    """

    provider = "local"

    def __init__(
        self, model: str = DEFAULT_MODEL, *, device: str | None = None, dtype: str | None = None,
        batch_size: int = 8, reuse_prefix: bool = True,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.reuse_prefix = reuse_prefix
        self.prefix_stats = {"computed": 0, "reused": 0, "tokens_saved": 0}
        self._prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.revision: str | None = None  # provenance (hash / commit of the weights), on load
        self._device, self._dtype = device, dtype
        self._lm: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._stop_ok: dict[tuple[str, ...], bool] = {}

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, name: str = "custom", *, batch_size: int = 8,
        reuse_prefix: bool = True,
    ) -> LocalClient:
        """Wrap an in-memory HF causal LM (tests, notebooks)."""
        client = cls(name, batch_size=batch_size, reuse_prefix=reuse_prefix)
        client._install(model, tokenizer)
        return client

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (false until the first call that needs them)."""
        return self._lm is not None

    @property
    def lm(self) -> Any:
        """The torch causal LM (loaded on first access)."""
        self._ensure_loaded()
        return self._lm

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, left-padding (loaded on first access)."""
        self._ensure_loaded()
        return self._tokenizer

    @property
    def device(self) -> Any:
        return next(self.lm.parameters()).device

    @property
    def breaker_open(self) -> bool:
        """An in-process model has no circuit breaker."""
        return False

    def local_backend(self) -> LocalClient:
        """This client is the in-process model (asking does not load it)."""
        return self

    def _ensure_loaded(self) -> None:
        """Load the weights once, even when several threads ask at the same time."""
        if self._lm is not None:
            return
        with self._load_lock:
            if self._lm is None:
                torch_device = _pick_device(self._device)
                lm, tokenizer, revision = _load_hf(self.model,
                                                   _pick_dtype(self._dtype, torch_device))
                self._install(lm.to(torch_device), tokenizer)
                self.revision = revision

    def _install(self, lm: Any, tokenizer: Any) -> None:
        tokenizer.padding_side = "left"  # generation appends on the right
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer = tokenizer
        self._lm = lm.eval()  # last: ``loaded`` turns true only once everything is set

    def capabilities(self) -> Capabilities:
        """Static: a local model does everything, so nothing needs loading to say so."""
        return Capabilities(chat=True, completions=True, echo_logprobs=True,
                            max_top_logprobs=LOCAL_MAX_TOP_LOGPROBS)

    def complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        return self.complete_many([prompt], max_tokens=max_tokens, temperature=temperature,
                                  stop=stop, seed=seed)[0]

    def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
        temperature: float = 0.0, stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        """The tokenizer's chat template when it has one, else a plain role-prefixed prompt."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True)
            special = False  # the template already starts with BOS
        else:
            text, special = render_messages(messages) + "\nassistant:", True
        return self._generate([text], max_tokens, temperature, stop, seed, special)[0]

    def complete_many(
        self, prompts: Sequence[str], *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> list[Completion]:
        """Batched generation; prompts are sorted by length so batches carry little padding."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: dict[int, Completion] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            done = self._generate([prompts[i] for i in chunk], max_tokens, temperature, stop,
                                  seed, True)
            results.update(zip(chunk, done, strict=True))
        return [results[i] for i in range(len(prompts))]

    def _generate(
        self, texts: list[str], max_tokens: int, temperature: float,
        stop: Sequence[str] | None, seed: int | None, special: bool,
    ) -> list[Completion]:
        """One batched ``generate`` call: greedy at temperature 0, seeded sampling else; the
        prompts' shared prefix comes from a KV cache when there is one worth reusing."""
        import torch  # heavy (~3 s); only generation needs it
        start = time.perf_counter()
        rows = [list(self.tokenizer(t, add_special_tokens=special).input_ids) for t in texts]
        config = self._gen_config(max_tokens, temperature, stop)
        shared = self._shared_prefix(rows, max_tokens)
        with torch.inference_mode(), _seeded(seed):
            if shared is None:
                out, width = self._generate_padded(rows, config)
            else:
                out, width = self._generate_on_prefix(rows, shared, config)
        latency = (time.perf_counter() - start) / len(texts)
        return [self._finish(row, len(ids), stop, latency)
                for row, ids in zip(out[:, width:], rows, strict=True)]

    def _generate_padded(self, rows: list[list[int]], config: Any) -> tuple[Any, int]:
        """Left-padded batch, every prompt token computed (the naive path)."""
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = self._tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = self._tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        out = self.lm.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                               tokenizer=self.tokenizer)
        return out, width

    def _generate_on_prefix(self, rows: list[list[int]], prefix: tuple[int, ...],
                            config: Any) -> tuple[Any, int]:
        """The shared prefix from its KV cache, then the suffixes padded on their left (the
        padding sits between prefix and suffix and is masked; positions follow the real
        tokens), so each row continues exactly as its unpadded prompt would."""
        n = len(prefix)
        cache = copy.deepcopy(self._prefix_cache(prefix))
        cache.batch_repeat_interleave(len(rows))
        width = max(len(r) for r in rows) - n
        pad = self.tokenizer.pad_token_id
        ids = self._tensor([r[:n] + [pad] * (width - len(r) + n) + r[n:] for r in rows])
        mask = self._tensor([[1] * n + [0] * (width - len(r) + n) + [1] * (len(r) - n)
                             for r in rows])
        with warnings.catch_warnings():
            # Recent transformers rename the argument to ``cache`` (a FutureWarning on every
            # call); the releases we still support (>=4.50) only know ``past_key_values``.
            warnings.filterwarnings("ignore", "`past_key_values` is deprecated", FutureWarning)
            out = self.lm.generate(input_ids=ids, attention_mask=mask, past_key_values=cache,
                                   generation_config=config, tokenizer=self.tokenizer)
        self.prefix_stats["tokens_saved"] += n * (len(rows) - 1)
        return out, n + width

    def _shared_prefix(self, rows: list[list[int]], max_tokens: int) -> tuple[int, ...] | None:
        """The prefix to take from a KV cache, or None: a cached one that every row starts
        with (at most :data:`PREFIX_SLACK` tokens short of what the rows share), else the
        rows' own shared prefix when several rows share :data:`MIN_SHARED_PREFIX`+ tokens.

        Rows and their generations must fit the model's sliding attention window: padding
        takes cache slots, and beyond the window it would shift what a token attends to.
        """
        if not self.reuse_prefix or not rows:
            return None
        window = getattr(getattr(self.lm, "config", None), "sliding_window", None)
        if window and max(len(r) for r in rows) + max_tokens > window:
            return None
        common = _common_prefix(rows)
        for key in reversed(self._prefixes):
            fits = len(key) <= common and all(tuple(r[:len(key)]) == key for r in rows)
            if fits and (len(rows) == 1 or len(key) >= common - PREFIX_SLACK):
                self._prefixes.move_to_end(key)
                self.prefix_stats["reused"] += 1
                self.prefix_stats["tokens_saved"] += len(key)
                return key
        if len(rows) < 2 or common < MIN_SHARED_PREFIX:
            return None
        return tuple(rows[0][:common])

    def _prefix_cache(self, prefix: tuple[int, ...]) -> Any:
        """The KV cache of ``prefix`` (computed once, the LM head on its last token only)."""
        from transformers import DynamicCache  # heavy (~5 s import): only when generating

        if prefix not in self._prefixes:
            cache = DynamicCache(config=self.lm.config)
            self.lm(input_ids=self._tensor([list(prefix)]), past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
            self._prefixes[prefix] = cache
            self.prefix_stats["computed"] += 1
            while len(self._prefixes) > MAX_CACHED_PREFIXES:
                self._prefixes.popitem(last=False)
        return self._prefixes[prefix]

    def _tensor(self, rows: list[list[int]]) -> Any:
        import torch  # heavy (~3 s); only generation needs it
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _gen_config(self, max_tokens: int, temperature: float,
                    stop: Sequence[str] | None = None) -> Any:
        """An explicit config: the model's own defaults (top-k 64 …) must not leak into greedy.

        Stop strings end generation as soon as every row has produced one (a one-line
        explanation is ~15 tokens; without this the model runs on to ``max_tokens``).
        """
        from transformers import GenerationConfig  # heavy (~5 s import): only when generating

        sample = temperature > 0
        return GenerationConfig(
            max_new_tokens=max_tokens, do_sample=sample, temperature=temperature if sample else 1.0,
            top_k=0 if sample else 50, top_p=1.0, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id, bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=self._usable_stops(stop),
        )

    def _usable_stops(self, stop: Sequence[str] | None) -> list[str] | None:
        """Stop strings transformers can match with this tokenizer (else None: ``_finish`` still
        cuts the text, generation just runs to ``max_tokens``).

        ``StopStringCriteria`` needs to map every vocabulary entry to text; word-level or other
        unusual tokenizers make it raise, and one such tokenizer must not fail every call.
        """
        from transformers import StopStringCriteria  # heavy (~5 s import): only when generating

        stops = [s for s in stop or () if s]
        if not stops:
            return None
        key = tuple(stops)
        if key not in self._stop_ok:
            try:
                StopStringCriteria(self.tokenizer, stops)
                self._stop_ok[key] = True
            except (ValueError, KeyError, IndexError):
                self._stop_ok[key] = False
        return stops if self._stop_ok[key] else None

    def _finish(
        self, row: Any, n_in: int, stop: Sequence[str] | None, latency: float
    ) -> Completion:
        """Cut a generated row at EOS (then at the first stop string) and count its tokens."""
        pad = self.tokenizer.pad_token_id
        ids = [i for i in row.tolist() if i != pad]  # rows that stopped early are padded
        eos = self.tokenizer.eos_token_id
        finish = "length"
        if eos in ids:
            ids, finish = ids[: ids.index(eos)], "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop or () if s and s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        return Completion(text=text, tokens_in=n_in, tokens_out=len(ids), cost=0.0,
                          latency_s=latency, finish_reason=finish)

    def prompt_logprobs(self, prompt: str, *, top_logprobs: int = 20) -> Completion:
        """Exact logprobs of every prompt token (BOS first, with None) from one forward."""
        import torch  # heavy (~3 s); only generation needs it
        start = time.perf_counter()
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
        with torch.inference_mode():
            logits = self.lm(input_ids=ids, use_cache=False).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        k = max(0, min(top_logprobs, logprobs.shape[-1]))
        top_values, top_ids = logprobs.topk(k, dim=-1)
        row = ids[0].tolist()
        tokens = [TokenLogprob(self._piece(row[0]), None, {})]
        for pos in range(1, len(row)):
            top = self._top(top_ids[pos - 1], top_values[pos - 1])
            tokens.append(TokenLogprob(self._piece(row[pos]),
                                       float(logprobs[pos - 1, row[pos]]), top))
        return Completion(text="", tokens_in=len(row), tokens_out=0, cost=0.0,
                          latency_s=time.perf_counter() - start, finish_reason="length",
                          prompt_logprobs=tokens)

    def _piece(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    def _top(self, ids: Any, values: Any) -> dict[str, float]:
        """Top alternatives as ``{text: logprob}``; ids that decode alike keep the best."""
        top: dict[str, float] = {}
        for token_id, value in zip(ids.tolist(), values.tolist(), strict=True):
            piece = self._piece(token_id)
            top[piece] = max(float(value), top.get(piece, -math.inf))
        return top


def _common_prefix(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own (the
    first generation step needs a fresh input)."""
    limit = min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def _seeded(seed: int | None) -> contextlib.AbstractContextManager[None]:
    """Seed torch for one sampling call without disturbing the caller's global RNG state."""
    import torch  # heavy (~3 s); only generation needs it
    if seed is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield

    return scope()
