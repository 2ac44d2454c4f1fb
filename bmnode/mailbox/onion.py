"""Publishing this node's onionpeer object (spec 12.5) through the mailbox's PoW pipeline.

A node running as a Tor onion service (``MailboxConfig.onion_peer``) announces itself with an
onionpeer object: TTL 7 days, stream 1, network-minimum PoW. About every 2 hours
(``onion_check_interval``) the mailbox checks whether its last one is still unexpired and, if
not (and no PoW for one is under way), queues a new one. The expiry of the last published
object is kept in the mailbox database, so a restart does not publish a second copy.
"""

from __future__ import annotations

from bmnode.crypto.objects import ONIONPEER_STREAM, build_onionpeer
from bmnode.errors import InvalidObject
from bmnode.mailbox.base import MailboxBase, log
from bmnode.mailbox.jobs import Outgoing
from bmnode.protocol.constants import ONIONPEER_TTL

__all__ = ["ONIONPEER_JOB", "OnionPeerMixin"]

#: PoW job kind (and outbox kind) of onionpeer objects.
ONIONPEER_JOB = "onionpeer"
#: mailbox.sqlite settings key: "host port expires" of the last onionpeer object published.
_SETTING = "onionpeer_published"


class OnionPeerMixin(MailboxBase):
    """The onionpeer part of :class:`~bmnode.mailbox.service.Mailbox`."""

    _next_onion_check: int = 0

    def _published_onionpeer(self) -> tuple[str, int, int] | None:
        """(host, port, expires) of the last onionpeer object published, or None."""
        raw = self.store.get_setting(_SETTING)
        try:
            host, port, expires = (raw or "").split()
            return host, int(port), int(expires)
        except ValueError:
            return None

    def _check_onionpeer(self, now: int) -> None:
        """Queue a PoW job for our onionpeer object when due (12.5): none of ours unexpired
        and none in work. Checked at most once per ``onion_check_interval``."""
        peer = self.config.onion_peer
        if peer is None or now < self._next_onion_check:
            return
        self._next_onion_check = now + self.config.onion_check_interval
        if ONIONPEER_STREAM not in self.config.streams:
            log.warning("not announcing the onion service: onionpeer objects go to stream %d, not joined",
                        ONIONPEER_STREAM)
            return
        host, port = peer
        ref = f"{host}:{port}"
        if self.store.jobs_for(ONIONPEER_JOB, ref):
            return
        last = self._published_onionpeer()
        if last is not None and last[:2] == (host, port) and last[2] > now:
            return
        try:
            out = build_onionpeer(host, port, now + ONIONPEER_TTL + self._jitter())
        except InvalidObject as exc:  # the config checks the name; this is a last guard
            log.warning("not announcing the onion service: %s", exc)
            return
        self.store.add_job(ONIONPEER_JOB, ref, out.body, 0, 0, now)
        log.info("announcing this node's onion service %s (onionpeer object, PoW queued)", ref)

    def _done_onionpeer(self, ref: str, obj: bytes, now: int) -> list[Outgoing]:
        host, _, port = ref.rpartition(":")
        expires = int.from_bytes(obj[8:16], "big")
        self.store.set_setting(_SETTING, f"{host} {port} {expires}")
        return [self._publish(obj, ONIONPEER_JOB, now)]
