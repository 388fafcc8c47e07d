"""Typed run configuration for every stage.

One object (``Config``) holds all settings so that a run's provenance is a single JSON blob.
Precedence, lowest first: built-in defaults < TOML file (``--config``) < environment variables
``AUTOLABEL_<SECTION>__<KEY>`` (and ``AUTOLABEL_DB``) < CLI flags. Unknown keys and bad values are
rejected with the key name and where it came from, because a silently ignored typo in a nightly
config costs a night.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autolabel.errors import ConfigError, InputError
from autolabel.selection import check_feature_spec

ENV_PREFIX = "AUTOLABEL_"
# Variables that steer the tool itself rather than a config key.
RESERVED_ENV = {"AUTOLABEL_DEBUG", "AUTOLABEL_CACHE_DIR", "AUTOLABEL_CONFIG"}
ExplainerName = Literal["llm", "tokens"]
ScorerName = Literal["simulation", "detection", "fuzzing"]
StageName = Literal["collect", "explain", "score", "embed", "audit"]


def _explainers(*names: ExplainerName) -> list[ExplainerName]:
    return list(names)


def _scorers(*names: ScorerName) -> list[ScorerName]:
    return list(names)


def _stages(*names: StageName) -> list[StageName]:
    return list(names)


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SubjectConfig(Section):
    """The language model whose activations the SAE reads."""

    model: str = Field("gemma-3-270m", description="HF id, local dir, .gguf file or the default")
    layer: int = Field(6, ge=0, description="layer whose residual stream output is hooked")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 …; default: CUDA if present")
    dtype: Literal["float32", "float16", "bfloat16"] | None = None


class SAEConfig(Section):
    """Which SAE to label, and how to train the offline default."""

    sae: str = Field("default", description="'default' (train+cache), a local dir, or RELEASE:ID")
    d_sae: int = Field(4096, gt=0, description="latents when training")
    k: int = Field(32, gt=0, description="active latents per token (TopK/BatchTopK) when training")
    architecture: Literal["batchtopk", "topk"] = "batchtopk"
    train_tokens: int = Field(200_000, gt=0, description="tokens to train on")
    eval_tokens: int = Field(100_000, gt=0, description="held-out tokens for the report")


class CorpusConfig(Section):
    """Text the activations are collected on."""

    source: str = Field(
        "wikipedia-sample", description="hf:NAME[:CONFIG][:SPLIT], a file/glob, or a built-in"
    )
    text_field: str = "text"
    window: int = Field(64, ge=8, description="tokens per context window, BOS included")
    seed: int = 0
    test_fraction: float = Field(
        0.3, gt=0.0, lt=1.0, description="documents held out to report the chosen label's score"
    )
    validation_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="documents held out to choose among candidate labels"
    )

    @model_validator(mode="after")
    def _room_for_train(self) -> CorpusConfig:
        """Train documents are what is left: the held-out fractions must leave some."""
        if self.test_fraction + self.validation_fraction >= 1.0:
            raise ValueError(
                f"test_fraction + validation_fraction = "
                f"{self.test_fraction + self.validation_fraction:g} leaves no train documents; "
                "keep their sum below 1 (defaults 0.3 + 0.2)"
            )
        return self


class CollectConfig(Section):
    """How many contexts of each kind to keep per feature."""

    tokens: int = Field(500_000, gt=0, description="corpus tokens to stream")
    features: str = Field("0:64", description="feature indices: '0:512', '1,5,9' or 'all'")
    batch_size: int = Field(8, gt=0)
    train_top: int = Field(20, ge=0)
    train_quantile: int = Field(10, ge=0)
    validation_top: int = Field(10, ge=0)
    validation_quantile: int = Field(10, ge=0)
    test_top: int = Field(10, ge=0)
    test_quantile: int = Field(10, ge=0)
    random: int = Field(20, ge=0, description="silent windows kept per held-out split")
    n_bins: int = Field(5, gt=0)

    @field_validator("features")
    @classmethod
    def _features_parse(cls, value: str) -> str:
        """Reject a malformed range when the config loads, not after the model has loaded."""
        try:
            check_feature_spec(value)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return value


class LLMConfig(Section):
    """The LLM that explains (and may simulate)."""

    provider: Literal["local", "openai"] = "local"
    model: str | None = Field(None, description="model name; local default: the subject model")
    base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. llama.cpp")
    concurrency: int = Field(8, gt=0)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    temperature: float | None = Field(
        None, ge=0.0, description="sampling temperature; default 0 for k=1, 0.7 for best-of-k"
    )
    max_cost: float | None = Field(None, ge=0.0, description="USD budget per run")
    max_total_tokens: int | None = Field(None, gt=0, description="LLM token budget per run")
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="model -> (USD per 1M input tokens, per 1M output)"
    )


class ExplainConfig(Section):
    """Explanation candidates per feature."""

    explainers: list[ExplainerName] = Field(default_factory=lambda: _explainers("tokens", "llm"))
    k: int = Field(1, gt=0, description="LLM candidates per feature (best-of-k)")
    template: Literal["auto", "bills", "delphi", "pairs"] = Field(
        "auto", description="explain prompt family: delphi (<<marked>> running text), pairs "
        "(token-activation pairs), bills (Bills et al. 2023); auto: measured default")
    variant: Literal["auto", "completion", "chat"] = Field(
        "auto", description="completion prompt (base models) or chat prompt (instruct "
        "models, chat-only servers); auto: completion for local, chat for servers")
    max_chars: int = Field(160, ge=20, le=300, description="quality gate: longest "
                           "explanation accepted, in characters")
    max_words: int = Field(24, ge=3, description="quality gate: longest explanation "
                           "accepted, in words")


class ScoringConfig(Section):
    """How explanations are scored."""

    scorers: list[ScorerName] = Field(default_factory=lambda: _scorers("simulation"))
    simulator: Literal["llm", "embedding", "auto"] = "auto"
    seed: int = 0
    # The verdict rule (issue 13): trusted when the bootstrap CI's low end is above the null's
    # (1 - verdict_alpha) quantile; both come from the stored predictions, no extra LLM call.
    verdict_alpha: float = Field(0.05, gt=0.0, lt=0.5, description="CI level 1 - alpha; "
                                 "null quantile 1 - alpha")
    n_null: int = Field(100, ge=8, description="null samples per score (sequence "
                        "permutations, no LLM call)")
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples of held-out sequences "
                        "for each score's CI")


class SearchConfig(Section):
    """Search defaults."""

    mode: Literal["keyword", "semantic", "hybrid"] = "hybrid"
    embedding_model: str = "all-MiniLM-L6-v2"


class AuditConfig(Section):
    """Bias audit thresholds."""

    pairs: str = Field("builtin", description="builtin[,crows:PATH][,winobias:DIR]"
                       "[,pairs:CSV] (CSV columns text_a,text_b,category[,group_a,group_b,"
                       "direction])")
    q_threshold: float = Field(0.05, gt=0.0, lt=1.0, description="BH q below which to flag")
    effect_threshold: float = Field(0.5, gt=0.0, description="minimum |d_z| to flag")
    specificity: float = Field(
        2.0, ge=0.0, description="category effect must be this many times the strongest "
        "neutral-swap effect (0 disables)"
    )
    embed_threshold: float = Field(0.30, gt=0.0, lt=1.0, description="tier-1 cosine threshold")
    n_boot: int = Field(1000, gt=0, description="bootstrap resamples for d_z CIs")
    n_random: int = Field(200, ge=0, description="random residual directions as a baseline")
    seed: int = 0
    min_unit_pairs: int = Field(5, ge=2, description="oriented pairs a template family or "
                                "source needs to count as a replication unit")
    max_batch_tokens: int = Field(4096, ge=64, description="padded tokens per audit forward "
                                  "batch (length-bucketed)")
    taxonomy: str | None = Field(None, description="JSON file overriding/extending categories")
    out_dir: str | None = Field(None, description="parent folder of `autolabel run` reports, "
                                "one <document id> folder per audit (default: <user data dir>/"
                                "reports/<database>-<hash>/<sae>)")


class RunConfig(Section):
    """The nightly batch (`autolabel run`)."""

    stages: list[StageName] = Field(
        default_factory=lambda: _stages("collect", "explain", "score", "embed", "audit")
    )
    deadline: float | None = Field(None, gt=0, description="seconds; stop cleanly after this")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: this process; ray: collection sharded over a Ray cluster"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster (host:port of `ray start --head`, or 'auto'); "
        "default: start a local Ray instance"
    )
    ray_workers: int | None = Field(
        None, gt=0, description="Ray actors (= corpus shards); default: fill the cluster"
    )
    ray_cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves per actor")
    ray_gpus_per_worker: float = Field(
        0.0, ge=0, description="GPUs Ray reserves per actor (e.g. 1 on a GPU cluster)"
    )


class Config(Section):
    """Every setting of every stage; stored as JSON with each run for provenance."""

    db: str | None = Field(None, description="database URL or SQLite path")
    subject: SubjectConfig = Field(default_factory=SubjectConfig)
    sae: SAEConfig = Field(default_factory=SAEConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    collect: CollectConfig = Field(default_factory=CollectConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    run: RunConfig = Field(default_factory=RunConfig)


def cache_dir() -> Path:
    """Where converted models, trained SAEs and other regenerable artefacts live.

    ``AUTOLABEL_CACHE_DIR`` overrides the default ``~/.cache/autolabel`` (tests point it at a
    temp dir so they never touch a user's cache unless they mean to).
    """
    root = os.environ.get("AUTOLABEL_CACHE_DIR") or Path.home() / ".cache" / "autolabel"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective config: defaults < TOML file < env vars < ``overrides``.

    ``overrides`` uses dotted keys (``{"subject.layer": 9}``); ``None`` values mean "flag not
    given" and are skipped so that a CLI default never hides a file or env setting.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        _merge(data, _read_toml(Path(path)), source=str(path))
    _merge(data, _env_values(env), source="environment")
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    _merge(data, _nest(flags), source="command line")
    return _validate(data, source=_describe_sources(path, env, flags))


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML config file, turning I/O and syntax problems into one-line errors."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the --config path") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it "
                          "as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; pass a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the syntax") from None


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    """Collect ``AUTOLABEL_SECTION__KEY=value`` variables as a nested dict.

    Values are parsed as JSON when they look like JSON (numbers, booleans, lists) so that
    ``AUTOLABEL_SUBJECT__LAYER=9`` is an int; anything else stays a string.
    """
    flat: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        if "." not in key and key not in Config.model_fields:
            continue  # e.g. AUTOLABEL_TEST_FOO: not ours to judge
        flat[key] = _parse_scalar(raw)
    return _nest(flat)


def _parse_scalar(raw: str) -> Any:
    """Interpret an env var value: JSON if it parses, else the raw string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"a.b": 1}`` into ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _merge(base: dict[str, Any], new: Mapping[str, Any], source: str) -> None:
    """Deep-merge ``new`` into ``base`` (later sources win key by key)."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, source)
        elif isinstance(value, Mapping):
            base[key] = dict(value)
        else:
            base[key] = value


def _describe_sources(
    path: str | Path | None, env: Mapping[str, str], flags: Mapping[str, Any]
) -> str:
    """Name where settings came from, for error messages."""
    parts = [str(path)] if path is not None else []
    if any(k.startswith(ENV_PREFIX) and k not in RESERVED_ENV for k in env):
        parts.append("AUTOLABEL_* environment variables")
    if flags:
        parts.append("command-line flags")
    return ", ".join(parts) or "defaults"


def _validate(data: dict[str, Any], source: str) -> Config:
    """Validate the merged settings; the first problem becomes a one-line ConfigError."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"unknown config key '{key}' (in {source}); "
                "run `autolabel config show` to see the valid keys"
            ) from None
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"bad value for '{key}' (in {source}): {message}; got {err.get('input')!r}"
        ) from None


def config_as_toml(config: Config) -> str:
    """Render a config as TOML (``None`` values are omitted: TOML has no null)."""
    data = config.model_dump(mode="json")
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    lines = [line for line in lines if line is not None and not line.endswith("= None")]
    for section, values in data.items():
        if not isinstance(values, dict):
            continue
        lines.append(f"\n[{section}]")
        lines.extend(
            f"{key} = {_toml_value(val)}" for key, val in values.items() if val is not None
        )
    return "\n".join(lines).lstrip() + "\n"


def _toml_value(value: Any) -> str:
    """Format one value as TOML (strings/lists via JSON, which TOML accepts for these)."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return json.dumps(value)
