"""Token-bucket rate-limiting agent for Sentinel, one bucket per client IP (SPEC §5).

    python examples/agents/ratelimit.py -s /var/run/sentinel/ratelimit.sock --rate 10 --burst 20

A client may make `--burst` requests at once and `--rate` per second after that. Over the limit the proxy
answers 429 with `Retry-After` (seconds until a token is back) and `X-RateLimit-Limit`; allowed responses
carry `x-ratelimit-remaining`. Each call is traced as `ratelimit.check` under the proxy's agent-call span.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sentinel_agent_sdk import Agent, Decision, RequestHeaders, run_agent
from sentinel_agent_sdk.tracing import child_span

LIMITED_BODY = json.dumps({"error": "rate limited"}, separators=(",", ":"))


@dataclass
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int  # whole tokens left after this request
    retry_after: int  # seconds until one token is back (0 when allowed)


class RateLimiter:
    """Token buckets keyed by client. The map is bounded: the least recently used buckets go first, and a
    bucket that has refilled completely is dropped at no cost (a new one would start full anyway)."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock  # monotonic: wall-clock jumps must not refill or drain buckets
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _refill(self, bucket: Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now

    def check(self, key: str) -> Verdict:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = Bucket(float(self.burst), now)
        else:
            self._buckets.move_to_end(key)
            self._refill(bucket, now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Verdict(True, math.floor(bucket.tokens), 0)
        return Verdict(False, 0, max(1, math.ceil((1 - bucket.tokens) / self.rate)))

    def _make_room(self, now: float) -> None:
        # Oldest first: idle buckets that are full again are dropped losslessly; past the bound, the
        # least recently used one goes even if not full (the map must never grow without limit).
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            self._refill(oldest, now)
            if oldest.tokens < self.burst and len(self._buckets) < self.max_keys:
                return
            del self._buckets[key]


def client_key(client_ip: str) -> str:
    """The bare IP: some proxies send `ip:port`, which would give every connection its own bucket."""
    for candidate in (client_ip, client_ip.rpartition(":")[0]):
        try:
            return str(ipaddress.ip_address(candidate.strip("[]")))
        except ValueError:
            continue
    return client_ip


class RateLimitAgent(Agent):
    name = "ratelimit"
    version = "0.1.0"

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def on_request_headers(self, event: RequestHeaders) -> Decision:
        key = client_key(event.metadata.client_ip)
        with child_span("sentinel-ratelimit-agent", "ratelimit.check", event.metadata.traceparent) as span:
            verdict = self.limiter.check(key)
            span.set_attribute("ratelimit.key", key)
            span.set_attribute("ratelimit.allowed", verdict.allowed)
            span.set_attribute("ratelimit.remaining", verdict.remaining)
        if verdict.allowed:
            return Decision.allow().add_response_header("x-ratelimit-remaining", str(verdict.remaining))
        headers = {
            "Retry-After": str(verdict.retry_after),
            "X-RateLimit-Limit": str(self.limiter.burst),
            "Content-Type": "application/json",
        }
        return Decision.block(429, LIMITED_BODY, headers).tag("ratelimit:limited")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ratelimit-agent", description="Token-bucket rate limiting per client IP.")
    parser.add_argument("--rate", type=float, default=10.0, help="tokens added per second (%(default)s)")
    parser.add_argument("--burst", type=int, default=20, help="bucket size: requests allowed at once (%(default)s)")
    parser.add_argument("--max-clients", type=int, default=100_000, help="buckets kept at most (%(default)s)")
    return run_agent(
        lambda args: RateLimitAgent(RateLimiter(args.rate, args.burst, max_keys=args.max_clients)), argv, parser=parser
    )


if __name__ == "__main__":
    raise SystemExit(main())
