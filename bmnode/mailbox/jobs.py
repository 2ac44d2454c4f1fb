"""What the mailbox asks of the rest of the node: proof-of-work jobs and objects to publish.

The mailbox never searches nonces and never talks to peers. :meth:`Mailbox.tick` and friends
return :class:`PowJob` (body + target, for the PoW broker) and :class:`Outgoing` (a complete
object for the net process). :func:`solve_job` and :func:`run_until_idle` do the work
synchronously with any backend, for tests and small tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from bmnode.pow.backend import PowBackend
from bmnode.pow.target import initial_hash, trial_value
from bmnode.errors import PowError
from bmnode.protocol.hashing import inventory_hash

if TYPE_CHECKING:  # pragma: no cover
    from bmnode.mailbox.service import Mailbox

__all__ = ["Outgoing", "PowJob", "complete", "run_until_idle", "solve_job"]

#: Job kinds: what the finished object is for.
JOB_KINDS = ("getpubkey", "pubkey", "ack", "msg", "broadcast", "object", "onionpeer")


@dataclass(frozen=True)
class PowJob:
    """Find a nonce for ``body`` (the object without its nonce) with trial value <= ``target``.

    ``job_id`` is handed back to :meth:`Mailbox.pow_done` with the nonce. ``kind`` says what
    the object is (getpubkey, pubkey, ack, msg, broadcast, object, onionpeer); ``ntpb``/``extra``
    are the difficulty the target was computed with (for display and priorities).
    """

    job_id: int
    kind: str
    body: bytes = field(repr=False)
    target: int
    ntpb: int
    extra: int

    @property
    def initial_hash(self) -> bytes:
        """SHA512(body): what the backends search with."""
        return initial_hash(self.body)

    @property
    def expires_time(self) -> int:
        """The object's expiresTime (first 8 bytes of the body)."""
        return int.from_bytes(self.body[:8], "big")


@dataclass(frozen=True)
class Outgoing:
    """A complete object (nonce first) to insert into the inventory and announce."""

    object: bytes = field(repr=False)
    kind: str

    @property
    def hash(self) -> bytes:
        """The inventory hash."""
        return inventory_hash(self.object)

    @property
    def expires_time(self) -> int:
        """The object's expiresTime."""
        return int.from_bytes(self.object[8:16], "big")


def solve_job(job: PowJob, backend: PowBackend) -> int:
    """A nonce for ``job`` found with ``backend`` (checked here); PowError if there is none."""
    ih = job.initial_hash
    sol = backend.search(ih, job.target)
    if sol is None:
        raise PowError(f"no nonce found for job {job.job_id}")
    if trial_value(sol.nonce, ih) > job.target:
        raise PowError(f"backend {backend.name!r} returned a nonce that misses the target of job {job.job_id}")
    return sol.nonce


def complete(
    mailbox: "Mailbox", actions: Iterable[PowJob | Outgoing], now: int, backend: PowBackend
) -> list[Outgoing]:
    """Solve every job in ``actions`` and every follow-up job; the objects to publish, in order."""
    out: list[Outgoing] = []
    pending = list(actions)
    while pending:
        action = pending.pop(0)
        if isinstance(action, Outgoing):
            out.append(action)
        else:
            pending.extend(mailbox.pow_done(action.job_id, solve_job(action, backend), now))
    return out


def run_until_idle(
    mailbox: "Mailbox", now: int, backend: PowBackend, *, max_rounds: int = 50
) -> list[Outgoing]:
    """tick(), solve every job synchronously, pow_done(); repeat until no job is left.

    Returns every object to publish, in order. The objects stay in the mailbox's outbox until
    :meth:`Mailbox.confirm_published`; callers that hand them over should confirm.
    """
    out: list[Outgoing] = []
    for _ in range(max_rounds):
        actions = mailbox.tick(now)
        out.extend(complete(mailbox, actions, now, backend))
        if not any(isinstance(a, PowJob) for a in actions):
            return out
    raise PowError(f"the mailbox still had PoW jobs after {max_rounds} rounds")


def kinds(items: Iterable[PowJob | Outgoing]) -> list[str]:
    """The kinds of a list of actions (handy in tests and logs)."""
    return [i.kind for i in items]
