"""Scorers: pooled r, digit expected values, KV-prefix reuse == naive, simulators' failure
statuses, the sanity check, the embedding simulator, detection and fuzzing."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from autolabel.embed import HashEmbedder
from autolabel.llm import Capabilities, Completion, FakeClient, LocalClient, TokenLogprob
from autolabel.planted import planted_features
from autolabel.scorers import (
    DetectionScorer,
    EchoLogprobSimulator,
    EmbeddingSimulator,
    FuzzingScorer,
    JSONSimulator,
    LocalLogprobSimulator,
    ScoredSequence,
    SimulationScorer,
    balanced_accuracy,
    choose_simulator,
    expected_digit,
    normalise_truth,
    pooled_pearson,
    roc_auc,
    sanity_check,
)

sys.path.insert(0, str(Path(__file__).parent))
from tiny import SPECIALS, WORDS  # noqa: E402

from tests.llama_server import llama_server  # noqa: E402, F401  (fixture)

CHAT_ONLY = Capabilities(chat=True, completions=True, echo_logprobs=False, max_top_logprobs=0)


# ------------------------------------------------------------------------ metrics


def test_pooled_pearson_is_hand_computed_and_not_mean_of_per_sequence_r() -> None:
    true = [np.array([0.0, 1.0]), np.array([2.0, 3.0])]
    pred = [np.array([0.0, 1.0]), np.array([3.0, 2.0])]
    # pooled: t=[0,1,2,3], p=[0,1,3,2]; cov=4, var=5 each -> r=0.8
    assert pooled_pearson(true, pred) == pytest.approx(0.8)
    per_sequence = np.mean([np.corrcoef(t, p)[0, 1] for t, p in zip(true, pred, strict=True)])
    assert per_sequence == pytest.approx(0.0)


def test_pooled_pearson_undefined_for_constant_inputs() -> None:
    assert pooled_pearson([np.array([1.0, 2.0])], [np.array([3.0, 3.0])]) is None
    assert pooled_pearson([np.zeros(4)], [np.arange(4.0)]) is None


def test_normalise_truth_uses_the_given_train_scale() -> None:
    np.testing.assert_allclose(normalise_truth([0, 2, 4, 8], scale=4.0), [0, 4.5, 9, 9])
    assert normalise_truth([1.0, 2.0], scale=0.0).tolist() == [0.0, 0.0]


def test_expected_digit_renormalises_over_digits_only() -> None:
    table = {"0": math.log(0.05), "9": math.log(0.025), " 3": math.log(0.025),
             "the": math.log(0.9)}
    # digits renormalised: 0 -> .5, 9 -> .25, 3 -> .25  =>  EV = 2.25 + 0.75
    assert expected_digit(table) == pytest.approx(3.0)
    assert expected_digit({"the": -0.1, "10": -1.0}) is None


def test_balanced_accuracy_and_auc() -> None:
    assert balanced_accuracy([1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]) == pytest.approx(0.625)
    assert roc_auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)


# ------------------------------------------------------------------------ local KV reuse


def _tiny_client(sliding_window: int = 16) -> LocalClient:
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


SEQS = [["march", "was", "cold"], ["the", "king", "and", "queen", "in", "paris", "june"],
        ["dog"], ["one", "two", "three", "four"], []]


@pytest.mark.parametrize("sliding_window", [16, 4096])
def test_kv_prefix_reuse_matches_naive_full_prompt(sliding_window: int) -> None:
    """Batched sequences over one shared prefix cache (sliding layers included: the prefix is
    far longer than the window) give the same predictions as one full prompt per sequence."""
    sim = LocalLogprobSimulator(_tiny_client(sliding_window), batch_size=3)
    assert len(sim.prefix_ids("names of months")) > 3 * 16
    fast = sim.predict("names of months", SEQS)
    naive = sim.predict_naive("names of months", SEQS)
    for a, b, tokens in zip(fast, naive, SEQS, strict=True):
        assert a.shape == (len(tokens),)
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert sim.name == "llm-logprob:tiny"


def test_local_simulator_processes_prefix_once() -> None:
    sim = LocalLogprobSimulator(_tiny_client(), batch_size=64)
    sim.predict("names of months", SEQS[:4])
    n_prefix = len(sim.prefix_ids("names of months"))
    widths = [len(sim.suffix_ids(s)[0]) for s in SEQS[:4]]
    assert sim.tokens_processed == n_prefix + 4 * max(widths)


# ------------------------------------------------------------------------ echo / JSON


def _slot_table(value: dict[str, float]) -> object:
    """A fake logprob table: whitespace-led words; every '\\t?' slot carries ``value``."""
    def table(prompt: str) -> list[TokenLogprob]:
        words = re.findall(r"\s*\S+", prompt)
        return [TokenLogprob(w, None if i == 0 else -1.0,
                             dict(value) if w == "\t?" else {w: -1.0})
                for i, w in enumerate(words)]
    return table


def test_echo_simulator_reads_slot_logprobs() -> None:
    client = FakeClient("echo-model", logprob_table=_slot_table({"7": -0.1, "1": -100.0}))
    sim = EchoLogprobSimulator(client)
    preds = sim.predict("names of months", [["In", " March"], ["a"]])
    assert [len(p) for p in preds] == [2, 1]
    np.testing.assert_allclose(np.concatenate(preds), 7.0, atol=1e-6)
    assert sim.name == "llm-echo:echo-model"


def test_echo_simulator_without_digits_is_parse_error() -> None:
    client = FakeClient("echo-model")  # default table: no digits anywhere
    seqs = [ScoredSequence(["a", "b"], [0.0, 1.0], "top", "d1")]
    result = SimulationScorer(EchoLogprobSimulator(client)).score("x", seqs, scale=1.0)
    assert (result.status, result.value, result.simulator) == ("parse_error", None,
                                                                "llm-echo:echo-model")


def test_json_simulator_count_mismatch_is_parse_error_not_zeros() -> None:
    client = FakeClient("chat-model", capabilities=CHAT_ONLY)
    client.enqueue("[0, 9]")  # two numbers for three tokens
    seqs = [ScoredSequence(["In", " March", " it"], [0.0, 1.0, 0.0], "top", "d1")]
    result = SimulationScorer(JSONSimulator(client)).score("months", seqs, scale=1.0)
    assert result.status == "parse_error" and result.value is None
    assert result.simulator == "llm-json:chat-model"
    assert "3 numbers" in result.details["error"]


def test_json_simulator_scores_a_good_reply() -> None:
    client = FakeClient("chat-model", capabilities=CHAT_ONLY)
    client.enqueue("Sure: [0, 9, 1]", "[0, 0]")
    seqs = [ScoredSequence(["In", " March", " it"], [0.0, 2.0, 0.0], "top", "d1"),
            ScoredSequence(["a", "b"], [0.0, 0.0], "random", "d2")]
    result = SimulationScorer(JSONSimulator(client)).score("months", seqs, scale=2.0)
    assert result.status == "ok" and result.value is not None and result.value > 0.9
    assert result.details["r_top"] is not None and result.details["r_random"] is None
    assert result.n_examples == 2


# ------------------------------------------------------------------------ sanity / choice


class OracleSimulator:
    """Predicts with the planted rule whose description it is given (a perfect reader)."""

    name = "oracle"

    def predict(self, explanation: str, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        rule = {f.description: f.rule for f in planted_features()}[explanation]
        return [np.array([9.0 * rule(t) for t in s]) for s in sequences]


def test_sanity_check_flags_a_simulator_that_ignores_the_explanation() -> None:
    client = FakeClient("deaf", logprob_table=_slot_table({"2": -0.5, "3": -1.0}))
    report = sanity_check(EchoLogprobSimulator(client))
    assert not report.passed
    assert report.mean_abs_delta == pytest.approx(0.0)
    assert report.discrimination == 0.0
    assert report.simulator == "llm-echo:deaf"


def test_sanity_check_passes_an_oracle() -> None:
    report = sanity_check(OracleSimulator())
    assert report.passed and report.discrimination == 1.0 and report.mean_abs_delta > 0.5


def test_auto_falls_back_to_embeddings_when_the_llm_fails_its_sanity_check() -> None:
    client = FakeClient("deaf-auto", logprob_table=_slot_table({"2": -0.5}))
    simulator, report = choose_simulator("auto", client, HashEmbedder)
    assert isinstance(simulator, EmbeddingSimulator) and simulator.name == "embedding:hash-bow"
    assert report is not None and not report.passed
    again, cached = choose_simulator("auto", client, HashEmbedder)
    assert cached is report  # once per model per process
    llm, none = choose_simulator("llm", client, HashEmbedder)
    assert isinstance(llm, EchoLogprobSimulator) and none is None
    chat = FakeClient("chat", capabilities=CHAT_ONLY)
    assert isinstance(choose_simulator("llm", chat, HashEmbedder)[0], JSONSimulator)


def test_simulation_score_records_simulator_subsets_and_degenerate() -> None:
    seqs = [ScoredSequence(["In", " March"], [0.0, 4.0], "top", "t1"),
            ScoredSequence([" June", " rain"], [4.0, 0.0], "quantile", "t2"),
            ScoredSequence(["the", " dog"], [0.0, 0.0], "random", "r1")]
    result = SimulationScorer(OracleSimulator()).score("names of months", seqs, scale=4.0)
    assert result.status == "ok" and result.value == pytest.approx(1.0)
    assert result.simulator == "oracle" and result.scorer == "simulation"
    assert result.details["r_top"] == pytest.approx(1.0) and result.details["r_random"] is None
    assert result.details["document_ids"] == ["t1", "t2", "r1"]
    flat = SimulationScorer(OracleSimulator()).score("colour words", seqs, scale=4.0)
    assert flat.status == "degenerate" and flat.value is None and flat.simulator == "oracle"


# ------------------------------------------------------------------------ embedding


def test_embedding_simulator_caches_and_names_itself() -> None:
    embedder = HashEmbedder()
    sim = EmbeddingSimulator(embedder)
    preds = sim.predict("march", [["In", " March"], [" march", " it"]])
    assert preds[0][1] == pytest.approx(1.0) and preds[0][0] < 0.5
    assert sim.tokens_processed == 4  # "In", "March", "march" (= the explanation), "it"
    sim.predict("march", [[" it", "In"]])
    assert sim.tokens_processed == 4  # all cached
    with pytest.raises(Exception, match="mode"):
        EmbeddingSimulator(embedder, mode="bogus")


@pytest.mark.slow
def test_embedding_simulator_ranks_months_above_verbs() -> None:
    from autolabel.embed import LocalEmbedder

    sim = EmbeddingSimulator(LocalEmbedder())
    sentence = "The meeting in March was moved to April because of the storm in June"
    tokens = sentence.split(" ")
    acts = [1.0 if t in ("March", "April", "June") else 0.0 for t in tokens]
    seqs = [ScoredSequence([" " + t for t in tokens], acts, "top", "d")]
    scorer = SimulationScorer(sim)
    months = scorer.score("names of months", seqs, scale=1.0)
    verbs = scorer.score("verbs", seqs, scale=1.0)
    assert months.value is not None and verbs.value is not None
    assert months.value > verbs.value + 0.3
    assert months.simulator == "embedding:all-MiniLM-L6-v2"


# ------------------------------------------------------------------------ detection/fuzzing


ACTIVE = [ScoredSequence(["In", " March", " we"], [0.0, 1.0, 0.0], "top", f"a{i}")
          for i in range(5)]
QUIET = [ScoredSequence(["the", " dog", " ran"], [0.0, 0.0, 0.0], "random", f"q{i}")
         for i in range(5)]


class RuleReader(FakeClient):
    """Answers each numbered example 1 when it mentions March (optionally: as marked text)."""

    def __init__(self, marked: bool = False) -> None:
        super().__init__("reader", capabilities=CHAT_ONLY)
        self.marked = marked

    def complete(self, prompt: str, **kw: object) -> Completion:  # type: ignore[override]
        self.prompts.append(prompt)
        needle = "<<March>>" if self.marked else "March"
        lines = re.findall(r"^Example (\d+): (.*)$", prompt, re.M)
        reply = "\n".join(f"Example {n}: {int(needle in text)}" for n, text in lines)
        return Completion(reply, 0, 0, 0.0, 0.0)


def test_detection_balanced_accuracy_from_scripted_replies() -> None:
    perfect = DetectionScorer(RuleReader()).score("names of months", ACTIVE, QUIET)
    assert (perfect.value, perfect.status, perfect.simulator) == (1.0, "ok", "")
    assert perfect.details["roc_auc"] is None  # no logprobs from a chat-only client
    client = FakeClient("yes-man", capabilities=CHAT_ONLY)
    client.enqueue(*["\n".join(f"Example {k}: 1" for k in range(1, 6))] * 2)
    always = DetectionScorer(client).score("names of months", ACTIVE, QUIET)
    assert always.value == pytest.approx(0.5) and len(client.prompts) == 2


def test_detection_unparseable_reply_is_parse_error() -> None:
    client = FakeClient("mumbler", capabilities=CHAT_ONLY, default="I think so")
    result = DetectionScorer(client).score("names of months", ACTIVE, QUIET)
    assert result.status == "parse_error" and result.value is None
    assert len(result.details["errors"]) == 2


def test_fuzzing_marks_activating_tokens() -> None:
    reader = RuleReader(marked=True)
    result = FuzzingScorer(reader).score("names of months", ACTIVE, QUIET)
    assert result.value == 1.0 and result.scorer == "fuzzing"
    assert "In <<March>> we" in "\n".join(reader.prompts)
    assert all("<<" in line for p in reader.prompts
               for line in re.findall(r"^Example \d+: .*$", p, re.M))


def test_detection_auc_from_logprobs() -> None:
    def table(prompt: str) -> list[TokenLogprob]:
        words = re.findall(r"\s*\S+", prompt)
        answers = iter("March" in line for line in re.findall(r"^Example \d+: (.+)$", prompt,
                                                                re.M)[:5])
        out = []
        for i, w in enumerate(words):
            top = {w: -1.0}
            if w == " ?":
                yes = next(answers)
                top = {"1": -0.2 if yes else -2.0, "0": -2.0 if yes else -0.2}
            out.append(TokenLogprob(w, None if i == 0 else -1.0, top))
        return out

    result = DetectionScorer(FakeClient("lp", logprob_table=table)).score("months", ACTIVE, QUIET)
    assert result.value == 1.0 and result.details["roc_auc"] == 1.0


@pytest.mark.slow
def test_echo_logprob_simulation_against_llama_cpp(llama_server: str) -> None:  # noqa: F811
    """Score one explanation through a real OpenAI-compatible server's echo + logprobs."""
    from autolabel.llm import OpenAIClient
    from autolabel.scorers import EchoLogprobSimulator, ScoredSequence, SimulationScorer

    client = OpenAIClient("gemma-3-270m", base_url=llama_server, timeout=300, max_retries=1)
    assert client.capabilities().echo_logprobs
    top = ScoredSequence(tokens=[" In", " March", " and", " April", " it", " rained"],
                         activations=[0, 1.0, 0, 0.8, 0, 0], kind="top", document_id="d1")
    rand = ScoredSequence(tokens=[" The", " cat", " sat", " down"], activations=[0, 0, 0, 0],
                          kind="random", document_id="d2")
    result = SimulationScorer(EchoLogprobSimulator(client)).score("names of months", [top, rand],
                                                                  scale=1.0)
    assert result.simulator == "llm-echo:gemma-3-270m"
    assert result.status in {"ok", "degenerate"}, result.details
    assert result.n_examples == 2 and result.details["tokens_processed"] > 0
    if result.status == "ok":
        assert result.value is not None and -1.0 <= result.value <= 1.0
