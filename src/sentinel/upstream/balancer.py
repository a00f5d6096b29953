"""Load-balancing algorithms (SPEC §2): pick a healthy target, optionally avoiding ones already tried."""

from __future__ import annotations

import abc
import bisect
import hashlib
import random
from collections.abc import Collection
from typing import Final

from sentinel.config.model import LoadBalancing
from sentinel.upstream.target import TargetState

_VIRTUAL_NODES_PER_WEIGHT: Final = 40


def _hash64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class Balancer(abc.ABC):
    """Base: subclasses implement `_choose` over the candidate list (healthy, not excluded)."""

    __slots__ = ("targets",)

    def __init__(self, targets: list[TargetState]) -> None:
        self.targets = targets

    def pick(self, now: float, key: str = "", exclude: Collection[TargetState] = ()) -> TargetState | None:
        targets = self.targets
        if not exclude and len(targets) == 1:
            only = targets[0]
            return only if only.healthy(now) else None
        candidates = [t for t in targets if t not in exclude and t.healthy(now)]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return self._choose(candidates, key)

    @abc.abstractmethod
    def _choose(self, candidates: list[TargetState], key: str) -> TargetState: ...


class SmoothWeightedRoundRobin(Balancer):
    """nginx's smooth weighted round robin: spreads a heavier target's turns evenly."""

    __slots__ = ()

    def _choose(self, candidates: list[TargetState], key: str) -> TargetState:
        total = 0
        best = candidates[0]
        for t in candidates:
            t.current_weight += t.weight
            total += t.weight
            if t.current_weight > best.current_weight:
                best = t
        best.current_weight -= total
        return best


class LeastConnections(Balancer):
    """Fewest in-flight requests per unit of weight; ties go round the list."""

    __slots__ = ("_next",)

    def __init__(self, targets: list[TargetState]) -> None:
        super().__init__(targets)
        self._next = 0

    def _choose(self, candidates: list[TargetState], key: str) -> TargetState:
        self._next = (self._next + 1) % len(candidates)
        rotated = candidates[self._next :] + candidates[: self._next]
        return min(rotated, key=lambda t: t.inflight / t.weight)


class WeightedRandom(Balancer):
    __slots__ = ()

    def _choose(self, candidates: list[TargetState], key: str) -> TargetState:
        return random.choices(candidates, weights=[t.weight for t in candidates])[0]


class PowerOfTwoChoices(Balancer):
    """Two random candidates, the less loaded wins."""

    __slots__ = ()

    def _choose(self, candidates: list[TargetState], key: str) -> TargetState:
        a, b = random.sample(candidates, 2)
        return a if a.inflight / a.weight <= b.inflight / b.weight else b


class ConsistentHash(Balancer):
    """A hash ring with virtual nodes: a key keeps its target while that target is healthy, and only the
    keys of a target that goes away move. Also used for ip_hash (the key is then the client IP)."""

    __slots__ = ("_points", "_ring")

    def __init__(self, targets: list[TargetState]) -> None:
        super().__init__(targets)
        ring = sorted(
            (_hash64(f"{t.key}#{i}"), n)
            for n, t in enumerate(targets)
            for i in range(_VIRTUAL_NODES_PER_WEIGHT * t.weight)
        )
        self._points = [p for p, _ in ring]
        self._ring = [targets[n] for _, n in ring]

    def _choose(self, candidates: list[TargetState], key: str) -> TargetState:
        allowed = set(map(id, candidates))
        start = bisect.bisect(self._points, _hash64(key))
        size = len(self._ring)
        for step in range(size):
            target = self._ring[(start + step) % size]
            if id(target) in allowed:
                return target
        return candidates[0]


_ALGORITHMS: Final[dict[LoadBalancing, type[Balancer]]] = {
    LoadBalancing.ROUND_ROBIN: SmoothWeightedRoundRobin,
    LoadBalancing.LEAST_CONNECTIONS: LeastConnections,
    LoadBalancing.RANDOM: WeightedRandom,
    LoadBalancing.IP_HASH: ConsistentHash,
    LoadBalancing.CONSISTENT_HASH: ConsistentHash,
    LoadBalancing.P2C: PowerOfTwoChoices,
}


def make_balancer(algorithm: LoadBalancing, targets: list[TargetState]) -> Balancer:
    return _ALGORITHMS[algorithm](targets)
