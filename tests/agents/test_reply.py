"""An agent's answer, read: what the proxy refuses to pass on to a client (SPEC §5)."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.agents.reply import BLOCK, CHALLENGE, REDIRECT, read_reply
from sentinel_agent_sdk.protocol import ProtocolError


def answer(decision: Any, **extra: Any) -> dict[str, Any]:
    return {"version": 2, "decision": decision, "audit": {"custom": {"correlation_id": "c"}}, **extra}


def test_the_three_decisions() -> None:
    block = read_reply(answer({"block": {"status": 429, "body": "slow down", "headers": {"Retry-After": "3"}}}))
    assert (block.decision, block.status, block.body, block.headers) == (
        BLOCK,
        429,
        b"slow down",
        [(b"retry-after", b"3")],
    )
    redirect = read_reply(answer({"redirect": {"url": "https://x.test/login", "status": 307}}))
    assert (redirect.decision, redirect.status, redirect.headers) == (
        REDIRECT,
        307,
        [(b"location", b"https://x.test/login")],
    )
    challenge = read_reply(answer({"challenge": {"challenge_type": "captcha", "params": {"site-key": "k"}}}))
    assert challenge.decision == CHALLENGE
    assert challenge.headers == [(b"x-challenge-type", b"captcha"), (b"x-challenge-site-key", b"k")]
    allows: list[Any] = ["allow", {"allow": None}, {"allow": {}}]
    for allow in allows:
        assert read_reply(answer(allow)).decision == "allow"


@pytest.mark.parametrize(
    "decision",
    [
        {"challenge": {"challenge_type": "captcha\r\nSet-Cookie: pwn=1", "params": {}}},
        {"challenge": {"challenge_type": "captcha", "params": {"k": "v\nSet-Cookie: pwn=1"}}},
        {"redirect": {"url": "https://x.test/\r\nSet-Cookie: pwn=1"}},
        {"redirect": {"url": "https://x.test/\x00"}},
        {"block": {"status": 403, "headers": {"x-a": "1\r\nSet-Cookie: pwn=1"}}},
        {"block": {"status": 403, "headers": {"bad name": "1"}}},
        {"block": {"status": 403, "headers": {"Content-Length": "0"}}},
        {"block": {"status": 100}},
        {"block": {"status": 204}},
        {"block": {"status": 304}},
        {"block": {"status": 600}},
        {"redirect": {"url": "https://x.test/", "status": 200}},
        {"unknown": {}},
        "deny",
    ],
)
def test_answers_that_would_corrupt_the_response_are_errors(decision: Any) -> None:
    with pytest.raises(ProtocolError):
        read_reply(answer(decision))


def test_header_ops_may_not_touch_framing() -> None:
    with pytest.raises(ProtocolError):
        read_reply(answer("allow", request_headers=[{"set": {"name": "Transfer-Encoding", "value": "chunked"}}]))
    with pytest.raises(ProtocolError):
        read_reply(answer("allow", response_headers=[{"add": {"name": "x-a", "value": "1\r\n2"}}]))
    ops = read_reply(
        answer("allow", request_headers=[{"remove": {"name": "X-A"}}, {"set": {"name": "x-b", "value": "2"}}])
    )
    assert ops.request_ops == (("remove", b"x-a", b""), ("set", b"x-b", b"2"))


def test_an_answer_without_a_decision_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="boom"):
        read_reply({"version": 2, "audit": {"custom": {"correlation_id": "c", "error": "boom"}}})
