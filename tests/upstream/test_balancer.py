"""Load balancing (SPEC §2): every algorithm over `TargetState`s, with health, passive failures and exclusion."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from sentinel.config.model import LoadBalancing, SocketAddress
from sentinel.upstream.balancer import Balancer, make_balancer
from sentinel.upstream.target import PASSIVE_FAILURE_THRESHOLD, PASSIVE_RETRY_SECS, TargetState

ALL_ALGORITHMS = list(LoadBalancing)
HASHING = [LoadBalancing.CONSISTENT_HASH, LoadBalancing.IP_HASH]


def make_targets(*weights: int) -> list[TargetState]:
    return [TargetState("backend", SocketAddress(f"10.0.0.{i + 1}", 8080), w) for i, w in enumerate(weights)]


def names(targets: list[TargetState], picked: list[TargetState | None]) -> str:
    """`picked` as letters: the first target is "a", the second "b" and so on; None is "-"."""
    letters = {id(t): chr(ord("a") + i) for i, t in enumerate(targets)}
    return "".join("-" if p is None else letters[id(p)] for p in picked)


def picks(balancer: Balancer, n: int, now: float, key: str = "") -> list[TargetState | None]:
    return [balancer.pick(now, key) for _ in range(n)]


def must_pick(balancer: Balancer, now: float, key: str = "", exclude: tuple[TargetState, ...] = ()) -> TargetState:
    chosen = balancer.pick(now, key, exclude)
    assert chosen is not None
    return chosen


def longest_run(sequence: str) -> int:
    best = run = 0
    previous = ""
    for c in sequence:
        run = run + 1 if c == previous else 1
        previous = c
        best = max(best, run)
    return best


@pytest.fixture
def seeded() -> Iterator[None]:
    """A fixed seed for the random algorithms, and the global generator's state put back afterwards."""
    state = random.getstate()
    random.seed(20240601)
    yield
    random.setstate(state)


# -- every algorithm --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_nothing_healthy_gives_none(algorithm: LoadBalancing) -> None:
    now = time.monotonic()
    targets = make_targets(1, 2, 3)
    balancer = make_balancer(algorithm, targets)
    for t in targets:
        t.active_healthy = False
    assert balancer.pick(now, "k") is None
    assert balancer.pick(now, "other") is None


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_single_target(algorithm: LoadBalancing) -> None:
    now = time.monotonic()
    (only,) = targets = make_targets(3)
    balancer = make_balancer(algorithm, targets)
    assert balancer.pick(now, "k") is only
    assert balancer.pick(now, "k", exclude=(only,)) is None
    only.active_healthy = False
    assert balancer.pick(now, "k") is None


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_unhealthy_targets_are_never_picked(algorithm: LoadBalancing, seeded: None) -> None:
    now = time.monotonic()
    a, b, c = targets = make_targets(1, 5, 1)
    b.active_healthy = False
    balancer = make_balancer(algorithm, targets)
    chosen = {id(must_pick(balancer, now, f"key-{i}")) for i in range(300)}
    assert chosen == {id(a), id(c)}


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_only_one_healthy_target_is_always_picked(algorithm: LoadBalancing) -> None:
    now = time.monotonic()
    a, b, c = targets = make_targets(1, 1, 1)
    a.active_healthy = c.active_healthy = False
    balancer = make_balancer(algorithm, targets)
    assert all(balancer.pick(now, f"key-{i}") is b for i in range(50))


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_exclude_is_honoured(algorithm: LoadBalancing, seeded: None) -> None:
    now = time.monotonic()
    a, b, c = targets = make_targets(1, 1, 1)
    balancer = make_balancer(algorithm, targets)
    for i in range(200):
        key = f"key-{i}"
        assert balancer.pick(now, key, exclude=(a,)) in (b, c)
        assert balancer.pick(now, key, exclude=[a, c]) is b
        assert balancer.pick(now, key, exclude={a, b, c}) is None
    # Excluding an unhealthy one changes nothing; excluding the last healthy one leaves none.
    a.active_healthy = False
    assert all(balancer.pick(now, f"k{i}", exclude=(b,)) is c for i in range(50))
    assert balancer.pick(now, "k", exclude=(b, c)) is None


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_passive_failures_take_a_target_out_until_the_retry_time(algorithm: LoadBalancing, seeded: None) -> None:
    now = time.monotonic()
    a, b = targets = make_targets(1, 1)
    balancer = make_balancer(algorithm, targets)

    for _ in range(PASSIVE_FAILURE_THRESHOLD - 1):
        b.record_failure(now)
    assert b.healthy(now)
    assert any(must_pick(balancer, now, f"key-{i}") is b for i in range(100))

    b.record_failure(now)  # the threshold is reached
    assert not b.healthy(now)
    assert b.passive_down_until == pytest.approx(now + PASSIVE_RETRY_SECS)
    assert b.health_label(now) == "unhealthy"
    later = now + PASSIVE_RETRY_SECS - 0.001
    for t in (now, later):
        assert all(balancer.pick(t, f"key-{i}") is a for i in range(100))
        assert balancer.pick(t, "k", exclude=(a,)) is None

    # The retry time has come: it is tried again.
    retry_at = b.passive_down_until
    assert b.healthy(retry_at)
    assert b.health_label(retry_at) == "healthy"
    assert any(must_pick(balancer, retry_at, f"key-{i}") is b for i in range(100))


def test_a_success_resets_the_passive_failure_count() -> None:
    now = time.monotonic()
    (target,) = make_targets(1)
    for _ in range(PASSIVE_FAILURE_THRESHOLD - 1):
        target.record_failure(now)
    target.record_success()
    for _ in range(PASSIVE_FAILURE_THRESHOLD - 1):
        target.record_failure(now)
    assert target.healthy(now)
    target.record_failure(now)
    assert not target.healthy(now)
    target.record_success()
    assert target.healthy(now)
    assert target.health_label(now) == "healthy"


def test_a_failure_after_the_retry_time_takes_the_target_out_again() -> None:
    now = time.monotonic()
    (target,) = make_targets(1)
    for _ in range(PASSIVE_FAILURE_THRESHOLD):
        target.record_failure(now)
    retry_at = now + PASSIVE_RETRY_SECS
    assert target.healthy(retry_at)
    target.record_failure(retry_at)  # the one trial request failed too
    assert not target.healthy(retry_at)
    assert target.healthy(retry_at + PASSIVE_RETRY_SECS)


# -- smooth weighted round robin --------------------------------------------------------------------


def test_round_robin_weights_5_1_1_follow_nginx() -> None:
    now = time.monotonic()
    targets = make_targets(5, 1, 1)
    balancer = make_balancer(LoadBalancing.ROUND_ROBIN, targets)
    sequence = names(targets, picks(balancer, 70, now))
    # nginx's documented sequence for weights 5, 1, 1, repeating exactly every 7 picks.
    assert sequence == "aabacaa" * 10
    assert longest_run(sequence[:7]) == 2  # never "aaaaabc"


def test_round_robin_equal_weights_rotate() -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1)
    balancer = make_balancer(LoadBalancing.ROUND_ROBIN, targets)
    assert names(targets, picks(balancer, 9, now)) == "abcabcabc"


@pytest.mark.parametrize("weights", [(3, 2, 1), (1, 10), (7, 3), (2, 2, 5, 1), (100, 1)])
def test_round_robin_exact_weighted_shares(weights: tuple[int, ...]) -> None:
    now = time.monotonic()
    targets = make_targets(*weights)
    balancer = make_balancer(LoadBalancing.ROUND_ROBIN, targets)
    total = sum(weights)
    for _ in range(3):  # every full cycle of `total` picks has the exact shares
        counts = Counter(id(p) for p in picks(balancer, total, now))
        assert [counts[id(t)] for t in targets] == list(weights)


@pytest.mark.parametrize("weights", [(5, 1, 1), (3, 3), (4, 2, 1), (6, 2)])
def test_round_robin_interleaves(weights: tuple[int, ...]) -> None:
    now = time.monotonic()
    targets = make_targets(*weights)
    balancer = make_balancer(LoadBalancing.ROUND_ROBIN, targets)
    sequence = names(targets, picks(balancer, sum(weights) * 4, now))
    # A heavy target's turns are spread: no run longer than its share of the gaps allows.
    heaviest, rest = max(weights), sum(weights) - max(weights)
    assert longest_run(sequence) <= -(-heaviest // rest) + 1
    # And never a run like "aaaaabc".
    assert "a" * heaviest not in sequence or heaviest == 1


def test_round_robin_skips_an_unhealthy_target_and_shares_among_the_rest() -> None:
    now = time.monotonic()
    a, b, c = targets = make_targets(3, 5, 1)
    balancer = make_balancer(LoadBalancing.ROUND_ROBIN, targets)
    b.active_healthy = False
    counts = Counter(id(p) for p in picks(balancer, 40, now))
    assert (counts[id(a)], counts[id(b)], counts[id(c)]) == (30, 0, 10)
    b.active_healthy = True
    counts = Counter(id(p) for p in picks(balancer, 90, now))
    assert counts[id(b)] >= 40  # back in the rotation with its weight


# -- least connections ------------------------------------------------------------------------------


def test_least_connections_picks_the_fewest_in_flight() -> None:
    now = time.monotonic()
    a, b, c = targets = make_targets(1, 1, 1)
    a.inflight, b.inflight, c.inflight = 3, 1, 2
    balancer = make_balancer(LoadBalancing.LEAST_CONNECTIONS, targets)
    assert all(balancer.pick(now) is b for _ in range(10))
    b.inflight = 5
    assert all(balancer.pick(now) is c for _ in range(10))


def test_least_connections_divides_by_weight() -> None:
    now = time.monotonic()
    a, b = targets = make_targets(4, 1)
    a.inflight, b.inflight = 6, 2  # 1.5 per unit of weight against 2.0
    balancer = make_balancer(LoadBalancing.LEAST_CONNECTIONS, targets)
    assert all(balancer.pick(now) is a for _ in range(10))
    a.inflight = 9  # 2.25 against 2.0
    assert all(balancer.pick(now) is b for _ in range(10))


def test_least_connections_ties_go_round() -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1)
    balancer = make_balancer(LoadBalancing.LEAST_CONNECTIONS, targets)
    assert sorted(names(targets, picks(balancer, 3, now))) == ["a", "b", "c"]


def test_least_connections_fills_in_proportion_to_weight() -> None:
    now = time.monotonic()
    a, b, c = targets = make_targets(1, 2, 3)
    balancer = make_balancer(LoadBalancing.LEAST_CONNECTIONS, targets)
    for _ in range(60):  # requests that stay in flight
        must_pick(balancer, now).inflight += 1
    assert (a.inflight, b.inflight, c.inflight) == (10, 20, 30)


def test_least_connections_skips_the_idle_but_unhealthy() -> None:
    now = time.monotonic()
    a, b = targets = make_targets(1, 1)
    a.inflight, b.inflight = 0, 50
    a.active_healthy = False
    balancer = make_balancer(LoadBalancing.LEAST_CONNECTIONS, targets)
    assert all(balancer.pick(now) is b for _ in range(10))


# -- random -----------------------------------------------------------------------------------------


def test_random_respects_weights(seeded: None) -> None:
    now = time.monotonic()
    a, b, c = targets = make_targets(1, 3, 6)
    balancer = make_balancer(LoadBalancing.RANDOM, targets)
    n = 10000
    counts = Counter(id(p) for p in picks(balancer, n, now))
    assert 0.07 * n < counts[id(a)] < 0.13 * n
    assert 0.25 * n < counts[id(b)] < 0.35 * n
    assert 0.55 * n < counts[id(c)] < 0.65 * n


def test_random_equal_weights_spread(seeded: None) -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1, 1)
    balancer = make_balancer(LoadBalancing.RANDOM, targets)
    n = 4000
    counts = Counter(id(p) for p in picks(balancer, n, now))
    assert all(0.2 * n < counts[id(t)] < 0.3 * n for t in targets)


# -- power of two choices ---------------------------------------------------------------------------


def test_p2c_never_picks_the_busy_one_of_two_when_the_other_is_idle(seeded: None) -> None:
    now = time.monotonic()
    busy, idle = targets = make_targets(1, 1)
    busy.inflight = 10
    balancer = make_balancer(LoadBalancing.P2C, targets)
    assert all(balancer.pick(now) is idle for _ in range(500))


def test_p2c_never_picks_the_most_loaded(seeded: None) -> None:
    now = time.monotonic()
    idle, some, most = targets = make_targets(1, 1, 1)
    some.inflight, most.inflight = 5, 10
    balancer = make_balancer(LoadBalancing.P2C, targets)
    n = 3000
    counts = Counter(id(p) for p in picks(balancer, n, now))
    assert counts[id(most)] == 0
    # The idle one wins every pair it is in (2 of the 3 pairs), the middle one only the pair without it.
    assert 0.6 * n < counts[id(idle)] < 0.73 * n
    assert 0.27 * n < counts[id(some)] < 0.4 * n


def test_p2c_load_is_per_unit_of_weight(seeded: None) -> None:
    now = time.monotonic()
    big, small = targets = make_targets(10, 1)
    big.inflight, small.inflight = 5, 1  # 0.5 against 1.0
    balancer = make_balancer(LoadBalancing.P2C, targets)
    assert all(balancer.pick(now) is big for _ in range(200))


def test_p2c_equal_load_uses_both(seeded: None) -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1)
    balancer = make_balancer(LoadBalancing.P2C, targets)
    n = 3000
    counts = Counter(id(p) for p in picks(balancer, n, now))
    assert all(0.2 * n < counts[id(t)] < 0.45 * n for t in targets)


# -- consistent hash and ip hash --------------------------------------------------------------------

KEYS = [f"user-{i}" for i in range(1000)]
IPS = [f"10.{i // 250}.{i % 250}.{(i * 7) % 256}" for i in range(1000)]


def mapping(balancer: Balancer, keys: list[str], now: float) -> dict[str, int]:
    return {k: id(must_pick(balancer, now, k)) for k in keys}


@pytest.mark.parametrize("algorithm", HASHING)
@pytest.mark.parametrize("keys", [KEYS, IPS], ids=["keys", "ips"])
def test_hash_same_key_same_target(algorithm: LoadBalancing, keys: list[str]) -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1, 1)
    balancer = make_balancer(algorithm, targets)
    first = mapping(balancer, keys, now)
    assert mapping(balancer, keys, now) == first
    # A new balancer over the same addresses (another worker, a reload) maps every key the same way.
    fresh = make_targets(1, 1, 1, 1)
    again = make_balancer(algorithm, fresh)
    position = {id(t): i for i, t in enumerate(targets)}
    fresh_position = {id(t): i for i, t in enumerate(fresh)}
    assert {k: fresh_position[v] for k, v in mapping(again, keys, now).items()} == {
        k: position[v] for k, v in first.items()
    }


@pytest.mark.parametrize("algorithm", HASHING)
@pytest.mark.parametrize("keys", [KEYS, IPS], ids=["keys", "ips"])
def test_hash_spreads_keys(algorithm: LoadBalancing, keys: list[str]) -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1, 1)
    balancer = make_balancer(algorithm, targets)
    counts = Counter(mapping(balancer, keys, now).values())
    assert len(counts) == 4
    assert all(150 < counts[id(t)] < 350 for t in targets), [counts[id(t)] for t in targets]


@pytest.mark.parametrize("algorithm", HASHING)
def test_hash_respects_weights(algorithm: LoadBalancing) -> None:
    now = time.monotonic()
    heavy, light = targets = make_targets(3, 1)
    balancer = make_balancer(algorithm, targets)
    counts = Counter(mapping(balancer, KEYS, now).values())
    assert 650 < counts[id(heavy)] < 850
    assert counts[id(heavy)] + counts[id(light)] == len(KEYS)


@pytest.mark.parametrize("algorithm", HASHING)
@pytest.mark.parametrize("keys", [KEYS, IPS], ids=["keys", "ips"])
def test_hash_only_the_keys_of_an_unhealthy_target_move(algorithm: LoadBalancing, keys: list[str]) -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1, 1)
    b = targets[1]
    balancer = make_balancer(algorithm, targets)
    before = mapping(balancer, keys, now)
    on_b = {k for k, v in before.items() if v == id(b)}
    assert 150 < len(on_b) < 350

    b.active_healthy = False
    during = mapping(balancer, keys, now)
    for k in keys:
        if k in on_b:
            assert during[k] != id(b)
        else:
            assert during[k] == before[k], k
    # b's keys are shared among the others, not all dumped on one neighbour.
    assert len({during[k] for k in on_b}) == 3

    b.active_healthy = True  # back: exactly the old mapping
    assert mapping(balancer, keys, now) == before


@pytest.mark.parametrize("algorithm", HASHING)
def test_hash_passive_failure_moves_only_that_targets_keys(algorithm: LoadBalancing) -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1)
    balancer = make_balancer(algorithm, targets)
    before = mapping(balancer, KEYS, now)
    victim = targets[2]
    for _ in range(PASSIVE_FAILURE_THRESHOLD):
        victim.record_failure(now)
    during = mapping(balancer, KEYS, now)
    moved = {k for k in KEYS if during[k] != before[k]}
    assert moved == {k for k in KEYS if before[k] == id(victim)}
    assert moved
    assert mapping(balancer, KEYS, now + PASSIVE_RETRY_SECS) == before


@pytest.mark.parametrize("algorithm", HASHING)
def test_hash_exclude_moves_the_key_like_unhealthy_does(algorithm: LoadBalancing) -> None:
    now = time.monotonic()
    targets = make_targets(1, 1, 1)
    balancer = make_balancer(algorithm, targets)
    for key in KEYS[:200]:
        first = must_pick(balancer, now, key)
        retry = must_pick(balancer, now, key, exclude=(first,))
        assert retry is not first
        # The retry target is the one the key would get with the first target down, every time.
        assert must_pick(balancer, now, key, exclude=(first,)) is retry
        first.active_healthy = False
        assert must_pick(balancer, now, key) is retry
        first.active_healthy = True
