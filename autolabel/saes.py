"""Sparse autoencoders: load them through sae-lens (registry or local dir) and train a small one.

One loading path serves both worlds: pretrained SAEs come from sae-lens's registry
(``RELEASE:SAE_ID``), and the offline default is trained here and saved in sae-lens's on-disk
format, so ``SAE.load_from_disk`` reads it back like any other.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from safetensors import SafetensorError

from autolabel.config import cache_dir
from autolabel.errors import SAEError
from autolabel.hashing import file_sha256
from autolabel.subject import SubjectModel, env_offline, respect_offline_env

if TYPE_CHECKING:
    from sae_lens import SAE
    from torch import Tensor

_WEIGHTS = "sae_weights.safetensors"
_CFG = "cfg.json"
REPORT_FILE = "training_report.json"
EPOCHS = 2  # passes over the training tokens: 200k tokens x 2 stays well inside the 10-minute bar


@dataclass
class LoadedSAE:
    """An sae-lens SAE plus the provenance the database stores beside its features."""

    sae: SAE
    source: str
    release: str | None
    sae_id: str | None
    path: Path | None
    hook_name: str
    d_in: int
    d_sae: int
    architecture: str
    content_hash: str
    model_id: str | None

    def encode(self, x: Tensor) -> Tensor:
        """``[N, d_in] -> [N, d_sae]`` float32 latents for raw (unnormalised) residuals."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        param = next(self.sae.parameters())
        with torch.inference_mode():
            return self.sae.encode(x.to(device=param.device, dtype=param.dtype)).float()


@dataclass
class TrainReport:
    """What training measured on held-out tokens; also written to ``path/training_report.json``."""

    path: Path
    explained_variance: float
    l0: float
    dead_fraction: float
    n_train_tokens: int
    n_eval_tokens: int
    seconds: float
    d_sae: int
    k: int
    architecture: str


# --------------------------------------------------------------------------------------- loading


def load_sae(spec: str, device: str | None = None) -> LoadedSAE:
    """Load from a local sae-lens directory, or ``RELEASE:SAE_ID`` / ``RELEASE/SAE_ID``."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    local = Path(spec).expanduser()
    if local.exists():
        return _load_local(spec, local, dev)
    release, sae_id = _parse_registry_spec(spec)
    return _load_pretrained(spec, release, sae_id, dev)


def _load_local(spec: str, path: Path, device: str) -> LoadedSAE:
    """A directory holding ``cfg.json`` + ``sae_weights.safetensors`` (sae-lens ``save_model``)."""
    from sae_lens import SAE  # heavy (~10 s to import): only when an SAE is really loaded

    _require_sae_dir(path)
    try:
        sae = SAE.load_from_disk(str(path), device=device)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as exc:
        raise SAEError(f"cannot load SAE from {path}: {_first_line(exc)} (is "
                       f"{_WEIGHTS} truncated or not a safetensors file?); re-save it with "
                       "sae-lens or retrain it.") from exc
    return _wrap(sae, spec, None, None, path.resolve(), local_sae_hash(path))


def _require_sae_dir(path: Path) -> None:
    """A local SAE is a directory with sae-lens's ``cfg.json`` and weights file."""
    if not (path / _CFG).is_file() or not (path / _WEIGHTS).is_file():
        raise SAEError(f"{path} is not an sae-lens SAE directory (needs {_CFG} and {_WEIGHTS}); "
                       "point at a saved SAE or train one with `autolabel sae train`.")


def local_sae_hash(path: Path) -> str:
    """Content hash of a saved SAE: sha256 over its weight files (not the sparsity log).

    Cheap enough (no sae-lens import, no tensors built) to decide whether a collection with
    this SAE is already stored before anything is loaded.
    """
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")):
        if file.name != "sparsity.safetensors":
            digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def local_sae_width(path: Path) -> int:
    """``d_sae`` from a saved SAE's ``cfg.json`` (for validating feature ranges early)."""
    _require_sae_dir(path)
    try:
        return int(json.loads((path / _CFG).read_text())["d_sae"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SAEError(f"{path / _CFG} is not a valid sae-lens config ({_first_line(exc)}); "
                       "re-save the SAE or retrain it.") from exc


def _parse_registry_spec(spec: str) -> tuple[str, str]:
    """Split ``RELEASE:SAE_ID`` or ``RELEASE/SAE_ID`` (SAE ids may themselves contain '/')."""
    # heavy (sae-lens, ~10 s to import): only for registry SAEs
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    sep = ":" if ":" in spec else "/"
    release, _, sae_id = spec.partition(sep)
    if not release or not sae_id:
        raise SAEError(f"{spec!r} is neither an existing directory nor RELEASE:SAE_ID; "
                       "pass a saved SAE directory or e.g. gemma-scope-2-270m-pt-res:"
                       "layer_9_width_16k_l0_medium.")
    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise SAEError(f"unknown sae-lens release {release!r}; see sae-lens's pretrained_saes.yaml "
                       "for release names, or pass a local SAE directory.")
    ids = directory[release].saes_map
    if sae_id not in ids:
        examples = ", ".join(sorted(ids)[:3])
        raise SAEError(f"release {release!r} has no SAE {sae_id!r}; pick one of its ids "
                       f"(e.g. {examples}).")
    return release, sae_id


def _load_pretrained(spec: str, release: str, sae_id: str, device: str) -> LoadedSAE:
    """Download through sae-lens (always the HF hub); offline, say so in one line."""
    # heavy (sae-lens, ~10 s to import): only when an SAE is really loaded
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    try:
        with respect_offline_env():
            sae = SAE.from_pretrained(release, sae_id, device=device)
    except Exception as exc:  # hub/network errors come from several libraries
        why = "no network: HF_HUB_OFFLINE is set" if env_offline() else _first_line(exc)
        raise SAEError(f"cannot download SAE {spec!r} from the Hugging Face hub ({why}); pass a "
                       "local SAE directory, or train one offline with `autolabel sae train`."
                       ) from exc
    model = get_pretrained_saes_directory()[release].model
    return _wrap(sae, spec, release, sae_id, None, _state_sha256(sae), model)


def _wrap(sae: SAE, spec: str, release: str | None, sae_id: str | None, path: Path | None,
          content_hash: str, model_id: str | None = None) -> LoadedSAE:
    """Collect provenance from the sae-lens config (metadata names hook and model if known)."""
    meta = sae.cfg.metadata
    training_arch = meta.get("training_architecture") if hasattr(meta, "get") else None
    return LoadedSAE(
        sae=sae, source=spec, release=release, sae_id=sae_id, path=path,
        hook_name=str(meta.hook_name or ""), d_in=int(sae.cfg.d_in), d_sae=int(sae.cfg.d_sae),
        architecture=str(training_arch or sae.cfg.architecture()), content_hash=content_hash,
        model_id=model_id or meta.model_name,
    )


def _state_sha256(sae: SAE) -> str:
    """For downloaded SAEs (no file path kept by sae-lens): hash the tensors in name order."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _hook_layer(hook_name: str) -> int | None:
    """Layer index in ``blocks.N.hook_resid_post`` (TransformerLens) or ``model.layers.N`` (HF)."""
    match = re.search(r"(?:blocks|layers)\.(\d+)(?:\.|$)", hook_name)
    return int(match.group(1)) if match else None


def check_fits(sae: LoadedSAE, subject: SubjectModel) -> None:
    """Refuse an SAE trained on another width or hook point: its latents would be noise."""
    if sae.d_in != subject.d_model:
        raise SAEError(f"SAE {sae.source} expects d_in={sae.d_in} but model {subject.model_id} has "
                       f"d_model={subject.d_model}; use an SAE trained on this model.")
    hook, layer = sae.hook_name, _hook_layer(sae.hook_name)
    is_resid = "resid_post" in hook or re.fullmatch(r"(model\.)?layers\.\d+", hook) is not None
    if layer != subject.layer or not is_resid:
        fix = (f"pass --layer {layer}" if is_resid and layer is not None
               else "use a residual-stream (resid_post) SAE")
        raise SAEError(f"SAE {sae.source} reads hook {hook or '(unknown)'} but the model is cut at "
                       f"{subject.hook_name}; {fix} or use an SAE for layer {subject.layer}.")


def _first_line(exc: BaseException) -> str:
    """Library exceptions span many lines; our messages must stay on one."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# -------------------------------------------------------------------------------------- training


def default_sae_dir(model_id: str, layer: int, d_sae: int = 4096, k: int = 32) -> Path:
    """Where the offline default SAE for this model and layer is cached."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")
    return cache_dir() / "saes" / f"{name}-L{layer}-topk{d_sae}-k{k}"


def _activations(subject: SubjectModel, batches: Iterable[tuple[Tensor, Tensor]],
                 n_tokens: int, progress: Callable[[int], None]) -> Tensor:
    """The first ``n_tokens`` residuals of real, non-special tokens as one ``[n, d]`` tensor.

    Padding carries no text and BOS/special tokens have 10x the usual norm (35-55k at Gemma
    layer 6); either would teach the SAE to spend latents on them.
    """
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    out = torch.empty(n_tokens, subject.d_model, dtype=torch.float32)
    special = torch.tensor(sorted(subject.special_token_ids), dtype=torch.long)
    filled = 0
    for input_ids, attention_mask in batches:
        keep = attention_mask.bool() & ~torch.isin(input_ids, special)
        acts = subject.resid(input_ids, attention_mask)[keep.to(subject.device)].cpu()
        take = min(len(acts), n_tokens - filled)
        out[filled:filled + take] = acts[:take]
        filled += take
        progress(filled)
        if filled >= n_tokens:
            return out
    raise SAEError(f"the corpus ran out after {filled} of {n_tokens} tokens; use a larger corpus "
                   "or lower n_train_tokens / n_eval_tokens.")


def _cycle(acts: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless shuffled minibatches (windows are contiguous text; shuffling decorrelates them)."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(acts), generator=gen)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield acts[order[start:start + batch_size]]


def _make_sae(subject: SubjectModel, d_sae: int, k: int, architecture: str,
              device: str) -> Any:
    """A BatchTopK or TopK training SAE whose metadata names the model and hook point."""
    # heavy (sae-lens, ~10 s to import): only when an SAE is trained
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    classes: dict[str, tuple[Any, Any]] = {
        "batchtopk": (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig),
        "topk": (TopKTrainingSAE, TopKTrainingSAEConfig),
    }
    if architecture not in classes:
        raise SAEError(f"cannot train architecture {architecture!r}; use 'batchtopk' or 'topk'.")
    sae_cls, cfg_cls = classes[architecture]
    cfg = cfg_cls(d_in=subject.d_model, d_sae=d_sae, k=k, device=device, dtype="float32")
    cfg.metadata.hook_name = subject.hook_name
    cfg.metadata.model_name = subject.model_id
    cfg.metadata.model_revision = subject.revision
    return sae_cls(cfg)


def _fit(sae: Any, train: Tensor, mean: Tensor, scale: float, seed: int, device: str,
         progress: Callable[[int], None]) -> None:
    """Run sae-lens's SAETrainer on our in-memory activations.

    The scaler's factor is set by hand (no 1,000-batch estimate) and ``b_dec`` starts at the
    data mean: sae-lens leaves it at 0, and Gemma's residual is mostly a constant offset, which
    otherwise costs ~90% dead latents. ``fit`` folds the scale into the weights at the end.
    """
    import torch  # heavy (~3 s); a run with nothing to collect never loads it

    # heavy (sae-lens, ~10 s to import): only when an SAE is trained
    from sae_lens import LoggingConfig, SAETrainer
    from sae_lens.config import SAETrainerConfig

    batch = min(1024, len(train))
    steps = EPOCHS * max(1, len(train) // batch)
    cfg = SAETrainerConfig(
        total_training_samples=steps * batch, train_batch_size_samples=batch, lr=1e-3, lr_end=1e-4,
        lr_scheduler_name="constant", lr_warm_up_steps=min(20, steps // 10),
        lr_decay_steps=steps // 5, device=device, dead_feature_window=max(1, min(50, steps // 8)),
        feature_sampling_window=10 * steps, logger=LoggingConfig(log_to_wandb=False),
    )
    _init_from_data(sae, train, mean, seed)
    with torch.no_grad():
        sae.b_dec.copy_((mean * scale).to(sae.b_dec))
    data = _cycle(train, batch, seed)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=_counting(data, progress))
    trainer.activation_scaler.scaling_factor = scale
    trainer.fit()
    _calibrate_threshold(sae, train, sae.cfg.k)


def _calibrate_threshold(sae: Any, train: Tensor, k: float, n: int = 8192) -> None:
    """Set BatchTopK's inference threshold so training tokens average exactly ``k`` latents.

    sae-lens keeps it as an EMA that starts at 0 (rate 0.01/step); after a few hundred steps it
    is still too low, and the saved JumpReLU fires ~50 latents instead of 32.
    """
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    with torch.no_grad():
        if not hasattr(sae, "topk_threshold"):
            return
        sample = train[torch.linspace(0, len(train) - 1, min(n, len(train))).long()]
        _, hidden_pre = sae.encode_with_hidden_pre(sample.to(sae.device))
        kth = torch.topk(hidden_pre.relu().flatten(), int(k * len(sample))).values[-1]
        sae.topk_threshold.fill_(kth.item())


def _init_from_data(sae: Any, train: Tensor, mean: Tensor, seed: int) -> None:
    """Point each latent at a random centred training activation (keeping sae-lens's norms).

    With random directions and only a few hundred steps, most latents never win the top-k and
    die (66% dead at 200k tokens); latents that start on real data directions all fire.
    """
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 1)
        rows = torch.randint(len(train), (sae.W_dec.shape[0],), generator=gen)
        directions = train[rows] - mean
        directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        norms = sae.W_dec.norm(dim=-1, keepdim=True)
        sae.W_dec.copy_(directions.to(sae.W_dec) * norms)
        sae.W_enc.copy_(sae.W_dec.T)


def _counting(data: Iterator[Tensor], progress: Callable[[int], None]) -> Iterator[Tensor]:
    """Pass batches through, reporting samples handed out so far."""
    seen = 0
    for batch in data:
        seen += len(batch)
        progress(seen)
        yield batch


def _evaluate(sae: SAE, held_out: Tensor, chunk: int = 4096) -> tuple[float, float, float]:
    """(explained variance, mean L0, dead fraction) of the saved SAE on raw held-out residuals.

    Explained variance is 1 - SSE / total variance around the held-out mean; a latent is dead if
    it never fires on any held-out token.
    """
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    mean = held_out.mean(0)
    sse = total = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    with torch.inference_mode():
        for start in range(0, len(held_out), chunk):
            x = held_out[start:start + chunk].to(sae.device)
            latents = sae.encode(x)
            sse += (sae.decode(latents) - x).double().pow(2).sum().item()
            total += (x - mean.to(x.device)).double().pow(2).sum().item()
            active = latents > 0
            l0 += active.sum().item()
            fired |= active.any(0).cpu()
    ev = 1.0 - sse / total if total > 0 else float("nan")
    return ev, l0 / len(held_out), 1.0 - fired.float().mean().item()


def _stats(train: Tensor) -> tuple[Tensor, float]:
    """Data mean and the scale that gives centred activations an average norm of sqrt(d_in).

    The scale is computed on *centred* residuals: the offset is absorbed by ``b_dec``, so the
    part the latents must explain is what should be well-conditioned.
    """
    mean = train.double().mean(0)
    centred_norm = (train.double() - mean).norm(dim=-1).mean().item()
    return mean.float(), math.sqrt(train.shape[1]) / max(centred_norm, 1e-12)


def train_sae(
    subject: SubjectModel, batches: Iterable[tuple[Tensor, Tensor]], out_dir: Path, *,
    d_sae: int = 4096, k: int = 32, architecture: str = "batchtopk",
    n_train_tokens: int = 200_000, n_eval_tokens: int = 100_000, seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> TrainReport:
    """Train an SAE on ``subject``'s residuals and save it in sae-lens's on-disk format.

    The first ``n_train_tokens`` usable tokens train (``EPOCHS`` shuffled passes), the next
    ``n_eval_tokens`` are held out for the report. ``progress(done, total)`` counts tokens:
    collected, then trained on (per epoch, so both phases weigh the same).
    Written to a temp dir and renamed, so ``out_dir`` is either complete or absent.
    """
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    start = time.perf_counter()
    torch.manual_seed(seed)
    total = 2 * n_train_tokens + n_eval_tokens
    report = progress or (lambda done, total: None)
    acts = _activations(subject, batches, n_train_tokens + n_eval_tokens,
                        lambda n: report(n, total))
    train, held_out = acts[:n_train_tokens], acts[n_train_tokens:]
    mean, scale = _stats(train)
    device = "cuda" if subject.device.type == "cuda" else "cpu"
    sae = _make_sae(subject, d_sae, k, architecture, device)
    done = n_train_tokens + n_eval_tokens
    _fit(sae, train, mean, scale, seed, device,
         lambda n: report(done + min(n // EPOCHS, n_train_tokens), total))
    report(total, total)  # whole batches may stop a few samples short of n_train_tokens
    return _save_and_report(sae, held_out, Path(out_dir), start, n_train_tokens, k, architecture)


def _save_and_report(sae: Any, held_out: Tensor, out_dir: Path, start: float, n_train: int,
                     k: int, architecture: str) -> TrainReport:
    """Save the inference SAE, reload it from disk, and measure *that* (what users will load)."""
    from sae_lens import SAE  # heavy (~10 s to import): only when an SAE is really trained

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the cache should read like any directory
    try:
        sae.save_inference_model(str(tmp))
        loaded = SAE.load_from_disk(str(tmp), device=str(sae.device))
        ev, l0, dead = _evaluate(loaded, held_out)
        result = TrainReport(
            path=out_dir, explained_variance=ev, l0=l0, dead_fraction=dead, n_train_tokens=n_train,
            n_eval_tokens=len(held_out), seconds=time.perf_counter() - start,
            d_sae=int(sae.cfg.d_sae), k=k, architecture=architecture,
        )
        (tmp / REPORT_FILE).write_text(json.dumps({**asdict(result), "path": str(out_dir)},
                                                  indent=2))
        _swap_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with the finished ``tmp`` under a lock, so two trainings racing for
    the same directory cannot interleave the delete and the rename."""
    with FileLock(str(out_dir.parent / f"{out_dir.name}.lock")):
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
