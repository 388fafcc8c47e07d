"""Planted-rule features: fake "SAE features" whose activation is a known rule over tokens.

Because we know the truth, they measure the scorers themselves: a scorer that cannot rank the
true rule's description above another rule's description on these cannot be trusted on real
SAE features either. Shared by ``benchmarks/bench_scoring_validity.py``, the simulator sanity
check (:func:`autolabel.scoring.sanity.sanity_check`) and the tests.

Sequences are built from real text (the offline corpora in :mod:`autolabel.corpus`) tokenised by
the caller's tokenizer, so the held-out material looks like what SAE features are scored on:
windows where the rule fires ("top") plus random windows (mostly zeros), split by document.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autolabel.corpus import assign_split, iter_documents
from autolabel.examples import TextExample


def _words(text: str) -> frozenset[str]:
    """A word list written as one string, as a set."""
    return frozenset(text.split())


MONTHS = _words("january february march april may june july august september october "
                "november december")
DAYS = _words("monday tuesday wednesday thursday friday saturday sunday")
COUNTRIES = _words(
    "france germany england britain spain italy china japan india russia canada mexico brazil "
    "egypt greece ireland scotland wales poland sweden norway denmark finland australia "
    "austria belgium portugal turkey iran iraq israel argentina chile peru cuba korea "
    "vietnam thailand pakistan nigeria kenya switzerland netherlands hungary romania")
PRONOUNS = _words("he she him her his hers himself herself")
COLOURS = _words("red green blue yellow black white orange purple pink brown grey gray "
                  "violet scarlet crimson")
ANIMALS = _words(
    "dog dogs cat cats horse horses cow cows bird birds fish lion lions tiger wolf wolves bear "
    "bears fox sheep pig pigs goat eagle snake snakes mouse mice rat rats deer whale whales "
    "elephant monkey ape apes insect insects bee bees ant ants duck owl rabbit")
FAMILY = _words(
    "mother father son daughter brother sister wife husband uncle aunt cousin parents parent "
    "children child grandfather grandmother nephew niece sons daughters brothers sisters "
    "family")
NUMBER_WORDS = _words("one two three four five six seven eight nine ten eleven twelve "
                      "hundred thousand million")
CLOSING = frozenset(")]}")
PUNCT = frozenset(".,;:!?")
_NOT_PLURAL = _words("is was has this his its us thus as yes less always perhaps")


def _norm(token: str) -> str:
    """The comparable form of a tokenizer piece: no surrounding space, lower case."""
    return token.strip().lower()


def _in(words: frozenset[str]) -> Callable[[str], float]:
    return lambda tok: 1.0 if _norm(tok) in words else 0.0


def _digits(tok: str) -> float:
    return 1.0 if tok.strip().isdigit() else 0.0


def _closing(tok: str) -> float:
    return 1.0 if tok.strip() and all(c in CLOSING for c in tok.strip()) else 0.0


def _punct(tok: str) -> float:
    return 1.0 if tok.strip() and all(c in PUNCT for c in tok.strip()) else 0.0


def _capitalised(tok: str) -> float:
    word = tok.strip()
    return 1.0 if len(word) > 1 and word[0].isupper() and word[1:].islower() else 0.0


def _plural(tok: str) -> float:
    word = tok.strip()
    ok = re.fullmatch(r"[a-z]{3,}s", word) is not None and not word.endswith("ss")
    return 1.0 if ok and word not in _NOT_PLURAL else 0.0


@dataclass
class PlantedFeature:
    """A fake feature: ``rule`` maps one token string to its activation."""

    name: str
    description: str  # the true rule, in words, as an explainer should phrase it
    rule: Callable[[str], float] = field(repr=False)

    def activations(self, tokens: Sequence[str]) -> list[float]:
        return [float(self.rule(t)) for t in tokens]


def planted_features() -> list[PlantedFeature]:
    """The fixed planted set (order is part of the benchmark: do not reorder)."""
    return [
        PlantedFeature("months", "names of months", _in(MONTHS)),
        PlantedFeature("digits", "digits and numbers written in figures", _digits),
        PlantedFeature("countries", "names of countries", _in(COUNTRIES)),
        PlantedFeature("pronouns", "gendered pronouns such as he, she, his, her", _in(PRONOUNS)),
        PlantedFeature("closing", "closing brackets and parentheses", _closing),
        PlantedFeature("colours", "colour words", _in(COLOURS)),
        PlantedFeature("days", "days of the week", _in(DAYS)),
        PlantedFeature("plurals", "plural nouns ending in s", _plural),
        PlantedFeature("punctuation", "punctuation marks such as periods and commas", _punct),
        PlantedFeature("capitalised", "capitalised words", _capitalised),
        PlantedFeature("animals", "names of animals", _in(ANIMALS)),
        PlantedFeature("family", "family members and relatives", _in(FAMILY)),
        PlantedFeature("number-words", "numbers written as words", _in(NUMBER_WORDS)),
    ]


def wrong_description(i: int, seed: int = 0) -> str:
    """Another rule's description for feature ``i``, chosen with a fixed seed (the floor)."""
    features = planted_features()
    others = [j for j in range(len(features)) if j != i]
    return features[random.Random(seed * 1009 + i).choice(others)].description


# ------------------------------------------------------------------------------------------
# Held-out sequences from real text


@dataclass
class PlantedData:
    """One planted feature's examples, split by document like collected SAE examples."""

    feature: PlantedFeature
    train: list[TextExample]  # explain from these (top + random)
    test: list[TextExample]  # score on these (top + random)


def hf_tokenize(tokenizer: Any) -> Callable[[str], list[str]]:
    """A text -> token-strings function from an HF tokenizer (pieces decoded one by one,
    cached per id, so leading spaces survive as in stored examples)."""
    pieces: dict[int, str] = {}

    def tokenize(text: str) -> list[str]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        for i in ids:
            if i not in pieces:
                pieces[i] = str(tokenizer.decode([i]))
        return [pieces[i] for i in ids]

    return tokenize


def word_tokenize(text: str) -> list[str]:
    """Whitespace-led words and single punctuation marks (tests; no tokenizer needed)."""
    return re.findall(r"\s*[^\W_]+|\s*[^\w\s]", text)


def corpus_windows(
    texts: Iterable[tuple[str, str]], tokenize: Callable[[str], list[str]], *,
    window: int = 32, max_tokens: int = 60_000,
) -> list[tuple[str, list[str]]]:
    """(document id, tokens) windows of consecutive tokens, cut from (id, text) documents."""
    out: list[tuple[str, list[str]]] = []
    total = 0
    for doc_id, text in texts:
        tokens = tokenize(text)
        for start in range(0, len(tokens) - window + 1, window):
            out.append((doc_id, tokens[start:start + window]))
            total += window
        if total >= max_tokens:
            break
    return out


def build_planted(
    windows: Sequence[tuple[str, list[str]]], *, n_top: int = 8, n_random: int = 6,
    seed: int = 0, test_fraction: float = 0.5,
) -> list[PlantedData]:
    """Per planted feature: up to ``n_top`` firing windows and ``n_random`` random windows in
    each split; split by document id (``corpus.assign_split``), so no document feeds both."""
    split = {doc: assign_split(doc, seed, test_fraction) for doc, _ in windows}
    out = []
    for feature in planted_features():
        rng = random.Random(f"{seed}:{feature.name}")
        data = PlantedData(feature, [], [])
        for part in ("train", "test"):
            pool = [(d, t) for d, t in windows if split[d] == part]
            firing = [w for w in pool if any(feature.rule(t) > 0 for t in w[1])]
            rng.shuffle(firing)
            chosen = [(w, "top") for w in firing[:n_top]]
            chosen += [(w, "random") for w in rng.sample(pool, min(n_random, len(pool)))]
            target = data.train if part == "train" else data.test
            target.extend(TextExample(list(t), feature.activations(t), document_id=d,
                                      kind=kind, split=part) for (d, t), kind in chosen)
        out.append(data)
    return out


def planted_from_corpus(
    tokenize: Callable[[str], list[str]], *, spec: str = "wikipedia-sample",
    window: int = 32, max_tokens: int = 60_000, n_top: int = 8, n_random: int = 6, seed: int = 0,
) -> list[PlantedData]:
    """Planted data from an offline corpus (default: gensim's Wikipedia sample)."""
    docs = ((d.id, d.text) for d in iter_documents(spec))
    wins = corpus_windows(docs, tokenize, window=window, max_tokens=max_tokens)
    return build_planted(wins, n_top=n_top, n_random=n_random, seed=seed)


# ------------------------------------------------------------------------------------------
# The fixed sanity set: short sentences written for this module, every rule fires somewhere

SANITY_TEXTS = (
    "The meeting in March was moved to April because of the storm in June.",
    "She told her brother that he had left his red coat on Tuesday.",
    "In 1998 France and Germany signed 3 trade deals (worth 40 million).",
    "The old dog chased two black cats and a brown fox across the fields.",
    "My mother and father visited Spain on a sunny Saturday in August.",
    "Prices rose by 12 percent [see table 4], then fell; nobody knew why!",
)


def sanity_sequences(
    feature: PlantedFeature, tokenize: Callable[[str], list[str]] = word_tokenize
) -> list[TextExample]:
    """The fixed sanity sentences as scored sequences for ``feature``."""
    out = []
    for i, text in enumerate(SANITY_TEXTS):
        tokens = tokenize(text)
        out.append(TextExample(tokens, feature.activations(tokens), document_id=f"sanity:{i}",
                               kind="top"))
    return out
