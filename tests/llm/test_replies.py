"""Reading OpenAI-compatible replies: logprobs in the OpenAI legacy, chat and llama.cpp shapes."""

from __future__ import annotations

import pytest

from autolabel.llm import parse_logprobs
from tests.llm.helpers import CONTENT_ECHO, LEGACY_ECHO, completion_body


def test_parse_logprobs_all_shapes() -> None:
    legacy = parse_logprobs(LEGACY_ECHO)
    assert legacy is not None and [t.token for t in legacy] == ["The", " cat", " sat", " on"]
    assert legacy[0].logprob is None and legacy[0].top == {}
    assert legacy[1].top == {" cat": -2.5, " dog": -1.0}
    content = parse_logprobs(CONTENT_ECHO)
    assert content is not None and content[1].logprob == -2.5
    assert content[1].top[" dog"] == -1.0
    # llama.cpp's native /completion shape (older builds give probabilities, not logprobs)
    native = parse_logprobs({"choices": [{"text": "x"}], "completion_probabilities": [
        {"content": " x",
         "probs": [{"tok_str": " x", "prob": 0.5}, {"tok_str": " y", "prob": 0.25}]}
    ]})
    assert native is not None and native[0].token == " x"
    assert native[0].top == pytest.approx({" x": -0.6931471805599453, " y": -1.3862943611198906})
    assert parse_logprobs(completion_body()) is None
