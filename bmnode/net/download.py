"""Which object to request from which peer (spec 5.5), without sockets.

Every hash a peer offers that we lack is *wanted*. Each wanted hash is requested from one
peer at a time; a request that is not answered within ``request_timeout`` moves to another
peer that offered the hash (or is forgotten when none is left). Memory is bounded: a peer can
queue at most ``max_queued_per_peer`` hashes, and at most ``max_wanted`` hashes are tracked in
all. Peers are opaque hashable keys (the relay node uses its connections).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Iterable, TypeVar

P = TypeVar("P", bound=Hashable)

#: Reference: outstanding requests are re-issued after 60 s and forgotten after one hour.
REQUEST_TIMEOUT = 60.0
GIVE_UP_AFTER = 3600.0


@dataclass
class _Want(Generic[P]):
    first_seen: float
    offerers: list[P]
    asked: P | None = None
    asked_at: float = 0.0


@dataclass
class _PeerState(Generic[P]):
    queue: deque[bytes] = field(default_factory=deque)
    #: hash -> time requested; insertion order is request order, so the oldest come first.
    inflight: dict[bytes, float] = field(default_factory=dict)


class DownloadTracker(Generic[P]):
    """Wanted hashes, who offered them, and the one in-flight request for each."""

    def __init__(
        self,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        give_up_after: float = GIVE_UP_AFTER,
        max_inflight_per_peer: int = 1000,
        max_queued_per_peer: int = 150_000,
        max_wanted: int = 500_000,
        rng: random.Random | None = None,
    ) -> None:
        self.request_timeout = request_timeout
        self.give_up_after = give_up_after
        self.max_inflight_per_peer = max_inflight_per_peer
        self.max_queued_per_peer = max_queued_per_peer
        self.max_wanted = max_wanted
        self._rng = rng or random.Random()
        self._wanted: dict[bytes, _Want[P]] = {}
        self._peers: dict[P, _PeerState] = {}
        self.ignored_offers = 0
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._wanted)

    def __contains__(self, h: bytes) -> bool:
        return h in self._wanted

    def add_peer(self, peer: P) -> None:
        """Register a peer (offers from unknown peers are ignored)."""
        self._peers.setdefault(peer, _PeerState())

    def queued(self, peer: P) -> int:
        """Hashes waiting to be requested from ``peer`` (stale entries included)."""
        st = self._peers.get(peer)
        return len(st.queue) if st else 0

    def inflight(self, peer: P) -> int:
        """Requests sent to ``peer`` and not yet answered."""
        st = self._peers.get(peer)
        return len(st.inflight) if st else 0

    def offerers(self, h: bytes) -> list[P]:
        """Peers that offered ``h`` (they already have it)."""
        w = self._wanted.get(h)
        return list(w.offerers) if w else []

    def offered(self, peer: P, hashes: Iterable[bytes], have: Callable[[bytes], bool], now: float) -> int:
        """Record that ``peer`` has ``hashes``; returns how many became newly wanted."""
        st = self._peers.get(peer)
        if st is None:
            return 0
        new = 0
        wanted = self._wanted
        for h in hashes:
            w = wanted.get(h)
            if w is not None:
                if peer not in w.offerers:
                    w.offerers.append(peer)
                continue
            if have(h):
                continue
            if len(st.queue) + len(st.inflight) >= self.max_queued_per_peer or len(wanted) >= self.max_wanted:
                self.ignored_offers += 1
                continue
            wanted[h] = _Want(now, [peer])
            st.queue.append(h)
            new += 1
        return new

    def next_requests(self, peer: P, now: float, limit: int) -> list[bytes]:
        """Hashes to request from ``peer`` now (marked in flight), at most ``limit``."""
        st = self._peers.get(peer)
        if st is None:
            return []
        out: list[bytes] = []
        room = min(limit, self.max_inflight_per_peer - len(st.inflight))
        wanted = self._wanted
        while st.queue and len(out) < room:
            h = st.queue.popleft()
            w = wanted.get(h)
            if w is None or w.asked is not None:
                continue  # arrived meanwhile, or someone else is fetching it
            w.asked = peer
            w.asked_at = now
            st.inflight[h] = now
            out.append(h)
        return out

    def has_work(self, peer: P) -> bool:
        """True when ``peer`` has queued hashes and free request slots."""
        st = self._peers.get(peer)
        return bool(st and st.queue and len(st.inflight) < self.max_inflight_per_peer)

    def received(self, h: bytes) -> tuple[list[P], P | None]:
        """``h`` arrived: forget it; returns (its offerers, the peer it was requested from)."""
        w = self._wanted.pop(h, None)
        if w is None:
            return [], None
        asked = w.asked
        if asked is not None:
            st = self._peers.get(asked)
            if st is not None:
                st.inflight.pop(h, None)
        return w.offerers, asked

    def forget(self, h: bytes) -> None:
        """Stop wanting ``h`` (e.g. it arrived invalid, or was injected locally)."""
        self.received(h)

    def _reassign(self, h: bytes, w: _Want[P], now: float) -> P | None:
        """Queue ``h`` at another live offerer (first in line); None when nobody is left."""
        alive = [p for p in w.offerers if p in self._peers]
        w.offerers = alive
        if not alive or now - w.first_seen > self.give_up_after:
            del self._wanted[h]
            return None
        nxt = self._rng.choice(alive)
        self._peers[nxt].queue.appendleft(h)
        return nxt

    def expire(self, now: float) -> set[P]:
        """Handle requests older than ``request_timeout``; returns peers that got new work."""
        woken: set[P] = set()
        for peer, st in list(self._peers.items()):
            late: list[bytes] = []
            for h, asked_at in st.inflight.items():
                if now - asked_at < self.request_timeout:
                    break  # request order: the rest are younger
                late.append(h)
            for h in late:
                del st.inflight[h]
                w = self._wanted.get(h)
                if w is None or w.asked != peer:
                    continue
                self.timeouts += 1
                w.asked = None
                if peer in w.offerers:
                    w.offerers.remove(peer)  # it did not deliver: try someone else
                nxt = self._reassign(h, w, now)
                if nxt is not None:
                    woken.add(nxt)
        return woken

    def remove_peer(self, peer: P, now: float) -> set[P]:
        """``peer`` disconnected: move its in-flight requests elsewhere; returns peers woken."""
        st = self._peers.pop(peer, None)
        woken: set[P] = set()
        if st is None:
            return woken
        for h in st.inflight:
            w = self._wanted.get(h)
            if w is None or w.asked != peer:
                continue
            w.asked = None
            nxt = self._reassign(h, w, now)
            if nxt is not None:
                woken.add(nxt)
        for h in st.queue:
            w = self._wanted.get(h)
            if w is None or w.asked is not None:
                continue
            nxt = self._reassign(h, w, now)
            if nxt is not None:
                woken.add(nxt)
        return woken


__all__ = ["DownloadTracker", "GIVE_UP_AFTER", "REQUEST_TIMEOUT"]
