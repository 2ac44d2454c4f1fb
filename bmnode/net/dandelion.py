"""Dandelion++ stem state (spec 11), without sockets.

Keeps the stems (up to two outbound peers), the node map (parent -> child stem) and the
objects in stem phase (child, stream, fluff deadline). The relay node asks it whom to
announce a stem object to and which objects are due to fluff. Peers are opaque hashable
keys; :data:`LOCAL` is the parent of locally created objects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Generic, Hashable, Iterable, TypeVar

P = TypeVar("P", bound=Hashable)


class _Local:
    def __repr__(self) -> str:
        return "LOCAL"


#: Parent key of objects created by this node.
LOCAL = _Local()

#: Reference defaults: stem probability 90 %, 2 stems, re-chosen (and node map cleared) every
#: 600 s, fluff deadline now + 10 + Exp(mean 30) seconds.
STEM_PROBABILITY = 90
MAX_STEMS = 2
REFRESH_INTERVAL = 600.0
FLUFF_BASE = 10.0
FLUFF_MEAN = 30.0


@dataclass
class StemObject(Generic[P]):
    """One hash in stem phase."""

    child: P | None
    stream: int | None
    deadline: float


class DandelionState(Generic[P]):
    """Stems, node map and stem objects, with the reference's rules."""

    def __init__(
        self,
        *,
        stem_probability: int = STEM_PROBABILITY,
        max_stems: int = MAX_STEMS,
        fluff_base: float = FLUFF_BASE,
        fluff_mean: float = FLUFF_MEAN,
        refresh_interval: float = REFRESH_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= stem_probability <= 100:
            raise ValueError(f"stem probability must be 0..100, got {stem_probability}")
        self.stem_probability = stem_probability
        self.max_stems = max_stems
        self.fluff_base = fluff_base
        self.fluff_mean = fluff_mean
        self.refresh_interval = refresh_interval
        self._rng = rng or random.Random()
        self.stems: list[P] = []
        self._node_map: dict[object, P | None] = {}
        self._objects: dict[bytes, StemObject[P]] = {}
        self._last_refresh = 0.0

    @property
    def enabled(self) -> bool:
        return self.stem_probability > 0

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, h: bytes) -> bool:
        return h in self._objects

    def hashes(self) -> set[bytes]:
        """Every hash in stem phase (excluded from the big inv, 11 rule 5)."""
        return set(self._objects)

    def child(self, h: bytes) -> P | None:
        """The child stem of a stem object (None when unassigned or not in stem phase)."""
        o = self._objects.get(h)
        return o.child if o else None

    def stream(self, h: bytes) -> int | None:
        o = self._objects.get(h)
        return o.stream if o else None

    def _deadline(self, now: float) -> float:
        return now + self.fluff_base + (self._rng.expovariate(1.0 / self.fluff_mean) if self.fluff_mean > 0 else 0.0)

    def child_for(self, parent: object) -> P | None:
        """The node-map child of ``parent``: a random stem other than the parent (or None)."""
        if parent in self._node_map:
            c = self._node_map[parent]
            if c is None or c in self.stems:
                return c
        choices = [s for s in self.stems if s != parent]
        c = self._rng.choice(choices) if choices else None
        self._node_map[parent] = c
        return c

    def add(self, h: bytes, parent: object, stream: int | None, now: float) -> P | None:
        """Put ``h`` in stem phase (rule 1 for LOCAL, rule 3 for a dinv); returns its child."""
        child = self.child_for(parent)
        self._objects[h] = StemObject(child, stream, self._deadline(now))
        return child

    def set_stream(self, h: bytes, stream: int, now: float) -> None:
        """The object arrived: its stream is known now and its deadline restarts."""
        o = self._objects.get(h)
        if o is not None:
            o.stream = stream
            o.deadline = self._deadline(now)

    def remove(self, h: bytes) -> StemObject[P] | None:
        """Leave stem phase (fluffed, or seen as a normal object: cycle detection)."""
        return self._objects.pop(h, None)

    def fluff_decision(self) -> bool:
        """Rule 2: announce to the child with a plain inv (True) instead of a dinv."""
        return self._rng.randint(1, 100) >= self.stem_probability

    def due(self, now: float) -> list[tuple[bytes, StemObject[P]]]:
        """Stem objects whose deadline passed (removed from stem phase; rule 4)."""
        out = [(h, o) for h, o in self._objects.items() if o.deadline <= now]
        for h, _ in out:
            del self._objects[h]
        return out

    def add_stem(self, peer: P) -> list[bytes]:
        """An outbound peer became established: make it a stem if fewer than ``max_stems``.

        Returns the unassigned stem objects now handed to it (rule 6).
        """
        if not self.enabled or len(self.stems) >= self.max_stems or peer in self.stems:
            return []
        self.stems.append(peer)
        self._node_map = {k: v for k, v in self._node_map.items() if v is not None}
        handed = []
        for h, o in self._objects.items():
            if o.child is None:
                o.child = peer
                handed.append(h)
        return handed

    def remove_peer(self, peer: P, now: float) -> list[bytes]:
        """``peer`` disconnected: its stem objects lose their child and get a new deadline."""
        if peer in self.stems:
            self.stems.remove(peer)
        self._node_map = {k: v for k, v in self._node_map.items() if k != peer and v != peer}
        orphaned = []
        for h, o in self._objects.items():
            if o.child == peer:
                o.child = None
                o.deadline = self._deadline(now)
                orphaned.append(h)
        return orphaned

    def refresh(self, outbound: Iterable[P], now: float, force: bool = False) -> dict[P, list[bytes]] | None:
        """Every ``refresh_interval``: re-choose the stems and clear the node map. Returns None
        when not due, else the unassigned stem objects handed to the new stems (rule 6)."""
        if not force and now - self._last_refresh < self.refresh_interval:
            return None
        self._last_refresh = now
        pool = list(outbound)
        self.stems = self._rng.sample(pool, min(self.max_stems, len(pool))) if self.enabled else []
        self._node_map = {}
        handed: dict[P, list[bytes]] = {}
        if self.stems:
            for h, o in self._objects.items():
                if o.child is None:
                    o.child = self._rng.choice(self.stems)
                    handed.setdefault(o.child, []).append(h)
        return handed


__all__ = ["LOCAL", "DandelionState", "StemObject"]
