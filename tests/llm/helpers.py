"""Shared helpers for the LLM client tests: a mock OpenAI-compatible server and reply bodies.

HTTP tests run the real openai SDK against an in-process mock transport (openai 3.x is built
on ``httpx2``), so request shapes and error classes are the SDK's own, with no network.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
from sqlalchemy import select

from autolabel.db import Database, LLMCall
from autolabel.llm import OpenAIClient

SECRET = "sk-test-SECRET-4242"

Handler = Callable[[dict[str, Any], str], httpx2.Response]


class MockServer:
    """An OpenAI-compatible server in a function: records every request body it was sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append((request.url.path, body))
        return self.handler(body, request.url.path)

    def client(self, model: str = "gpt-4o-mini", **kw: Any) -> tuple[OpenAIClient, list[float]]:
        sleeps: list[float] = []
        http = httpx2.Client(transport=httpx2.MockTransport(self))
        kw.setdefault("max_retries", 3)
        client = OpenAIClient(model, base_url="http://llm.test/v1", api_key=SECRET,
                              http_client=http, sleep=sleeps.append, **kw)
        return client, sleeps


def completion_body(text: str = "hello", n_in: int = 5, n_out: int = 2, **choice: Any) -> dict:
    return {"id": "c1", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", **choice}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                      "total_tokens": n_in + n_out}}


def chat_body(text: str = "hi there", n_in: int = 7, n_out: int = 3) -> dict:
    return {"id": "c2", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out}}


def ok(body: dict) -> httpx2.Response:
    return httpx2.Response(200, json=body)


def scripted(*responses: httpx2.Response | Exception) -> Handler:
    """Reply with each response in turn (an exception is raised, e.g. a timeout); the last
    one repeats."""
    queue = list(responses)

    def handler(_body: dict[str, Any], _path: str) -> httpx2.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


# Legacy echo reply for prompt "The cat sat": 3 prompt tokens + 1 generated token.
LEGACY_ECHO = completion_body(
    "The cat sat on", n_in=3, n_out=1,
    logprobs={"tokens": ["The", " cat", " sat", " on"],
              "token_logprobs": [None, -2.5, -1.25, -0.5],
              "top_logprobs": [None, {" cat": -2.5, " dog": -1.0}, {" sat": -1.25},
                               {" on": -0.5, " down": -1.5}],
              "text_offset": [0, 3, 7, 11]})

# llama.cpp-style (chat-shaped ``logprobs.content``) reply, BOS counted in usage but not echoed.
CONTENT_ECHO = completion_body(
    "The cat sat on", n_in=4, n_out=1,
    logprobs={"content": [
        {"token": "The", "logprob": -9.0, "top_logprobs": [{"token": "A", "logprob": -1.0}]},
        {"token": " cat", "logprob": -2.5,
         "top_logprobs": [{"token": " cat", "logprob": -2.5}, {"token": " dog", "logprob": -1.0}]},
        {"token": " sat", "logprob": -1.25, "top_logprobs": []},
        {"token": " on", "logprob": -0.5, "top_logprobs": []}]})


def rows(database: Database) -> list[LLMCall]:
    """Every llm_calls row, oldest first."""
    with database.session() as session:
        return list(session.scalars(select(LLMCall).order_by(LLMCall.id)))
