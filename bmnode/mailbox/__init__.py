"""The mailbox: identities, contacts, inbox/sent and the send pipeline (spec 10, 13, 14.4).

Logic only (no sockets, no processes): :class:`Mailbox` is driven by the mailbox process,
which feeds it network objects and the clock, runs the PoW jobs it asks for and hands the
finished objects to the net process.
"""

from bmnode.mailbox.errors import ApiError
from bmnode.mailbox.jobs import Outgoing, PowJob, complete, run_until_idle, solve_job
from bmnode.mailbox.service import SENT_STATUSES, Mailbox, MailboxConfig

__all__ = [
    "ApiError",
    "Mailbox",
    "MailboxConfig",
    "Outgoing",
    "PowJob",
    "SENT_STATUSES",
    "complete",
    "run_until_idle",
    "solve_job",
]
