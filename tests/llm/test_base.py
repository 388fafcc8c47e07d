"""The client protocol's shared pieces: request hashing (the cache key) and message rendering."""

from __future__ import annotations

from autolabel.llm import render_messages, request_hash


def test_request_hash_is_stable_and_covers_settings() -> None:
    a = request_hash("openai", "m", "complete", {"prompt": "x", "temperature": 0.0})
    assert a == request_hash("openai", "m", "complete", {"temperature": 0.0, "prompt": "x"})
    assert a != request_hash("openai", "m", "complete", {"prompt": "x", "temperature": 0.5})
    assert a != request_hash("openai", "m2", "complete", {"prompt": "x", "temperature": 0.0})
    assert a != request_hash("local", "m", "complete", {"prompt": "x", "temperature": 0.0})


def test_render_messages_is_role_prefixed_lines() -> None:
    text = render_messages([{"role": "system", "content": "be brief"}, {"content": "hi"}])
    assert text == "system: be brief\nuser: hi"
