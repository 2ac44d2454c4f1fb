"""Own identities (random, deterministic, chans; enable, delete), the address book,
subscriptions and the black/white lists (spec 9.5, 9.6, 10.4 step 8, 14.4): the mailbox
operations behind the API's address commands."""

from __future__ import annotations

from typing import Any

from bmnode.crypto.derived import address_key_and_tag
from bmnode.crypto.generation import deterministic_addresses, join_chan, random_address
from bmnode.crypto.identity import Identity, chan_label
from bmnode.errors import InvalidAddress, InvalidObject, MalformedMessage
from bmnode.mailbox.args import bool_arg, clock, int_arg, label_arg, multiplier_arg, passphrase_arg
from bmnode.mailbox.base import MailboxBase, locked, log
from bmnode.mailbox.errors import ALREADY_SUBSCRIBED, MESSAGES, ApiError, check_address, normalise_address
from bmnode.protocol.constants import OBJECT_BROADCAST
from bmnode.protocol.objects import parse_object
from bmnode.store.mailbox import IdentityRow

__all__ = ["AccountsMixin", "DETERMINISTIC_LABEL", "MAX_DETERMINISTIC"]

#: Most addresses one createDeterministicAddresses call may make (error 5).
MAX_DETERMINISTIC = 999
#: The label the reference's API gives deterministic addresses.
DETERMINISTIC_LABEL = "unused API address"


class AccountsMixin(MailboxBase):
    """Identities, address book, subscriptions, black/white lists."""

    def _difficulty(self, total: Any, small: Any) -> tuple[int, int]:
        t, s = multiplier_arg(total, "totalDifficulty"), multiplier_arg(small, "smallMessageDifficulty")
        cfg = self.config
        ntpb = max(int(cfg.min_ntpb * t), cfg.min_ntpb) if t else cfg.min_ntpb
        extra = max(int(cfg.min_extra * s), cfg.min_extra) if s else cfg.min_extra
        return ntpb, extra

    def _add_identity(self, ident: Identity, label: str, now: int, *, publish: bool) -> bool:
        row = IdentityRow(
            ident.address, ident.version, ident.stream, label, True, ident.chan, ident.signing_key.secret,
            ident.encryption_key.secret, ident.nonce_trials_per_byte, ident.extra_bytes, ident.behavior_bitfield,
            0, now,
        )
        with self.store.tx():
            if not self.store.add_identity(row):
                return False
            if publish and not ident.chan:
                self._queue_pubkey(ident, now)
        return True

    @locked
    def create_random_address(
        self,
        label: str | bytes = "",
        eighteen_byte_ripe: bool = False,
        total_difficulty: float = 0,
        small_message_difficulty: float = 0,
        now: int | None = None,
    ) -> str:
        """A new random v4 stream-1 address (9.5); its pubkey is published (a PoW job)."""
        now = clock(now)
        text = label_arg(label)
        short = bool_arg(eighteen_byte_ripe, "eighteenByteRipe")
        ntpb, extra = self._difficulty(total_difficulty, small_message_difficulty)
        stream = min(self.config.streams)
        gen = random_address(version=4, stream=stream, leading_zero_bytes=2 if short else 1)
        ident = Identity.from_generated(
            gen, nonce_trials_per_byte=ntpb, extra_bytes=extra, label=text, behavior_bitfield=self._behavior()
        )
        self._add_identity(ident, text, now, publish=True)
        self._reload_identities()
        log.info("created random address %s", ident.address)
        return ident.address

    @locked
    def create_deterministic_addresses(
        self,
        passphrase: str | bytes,
        number: int = 1,
        version: int = 0,
        stream: int = 0,
        eighteen_byte_ripe: bool = False,
        total_difficulty: float = 0,
        small_message_difficulty: float = 0,
        now: int | None = None,
    ) -> list[str]:
        """The first ``number`` deterministic addresses of ``passphrase`` (9.5), saved and their
        pubkeys published; addresses already present are skipped and left out of the result.
        Errors 1, 2, 3, 4, 5, 23."""
        now = clock(now)
        secret = passphrase_arg(passphrase)
        number = int_arg(number, "numberOfAddresses")
        version = int_arg(version, "addressVersionNumber") or 4
        if version not in (3, 4):
            raise ApiError(2, f"{MESSAGES[2]} {version} isn't supported.")
        stream = int_arg(stream, "streamNumber") or 1
        if stream != 1 or stream not in self.config.streams:
            raise ApiError(3)
        if number < 1:
            raise ApiError(4)
        if number > MAX_DETERMINISTIC:
            raise ApiError(5)
        short = bool_arg(eighteen_byte_ripe, "eighteenByteRipe")
        ntpb, extra = self._difficulty(total_difficulty, small_message_difficulty)
        made = []
        zeros = 2 if short else 1
        for gen in deterministic_addresses(secret, number, version=version, stream=stream, leading_zero_bytes=zeros):
            ident = Identity.from_generated(
                gen, nonce_trials_per_byte=ntpb, extra_bytes=extra, label=DETERMINISTIC_LABEL,
                behavior_bitfield=self._behavior(),
            )
            if self._add_identity(ident, DETERMINISTIC_LABEL, now, publish=True):
                made.append(ident.address)
        self._reload_identities()
        return made

    def get_deterministic_address(self, passphrase: str | bytes, version: int = 4, stream: int = 1) -> str:
        """The first deterministic address of ``passphrase``, not saved (errors 1, 2, 3)."""
        secret = passphrase_arg(passphrase)
        version, stream = int_arg(version, "addressVersionNumber"), int_arg(stream, "streamNumber")
        if version not in (3, 4):
            raise ApiError(2, f"The address version number currently must be 3 or 4. {version} isn't supported.")
        if stream != 1:
            raise ApiError(3)
        return deterministic_addresses(secret, 1, version=version, stream=stream)[0].address

    @locked
    def create_chan(self, passphrase: str | bytes, now: int | None = None) -> str:
        """Create the chan of ``passphrase`` (9.6): errors 1 (blank), 24 (already present)."""
        now = clock(now)
        name = passphrase_arg(passphrase)
        ident = Identity.for_chan(name, nonce_trials_per_byte=self.config.min_ntpb, extra_bytes=self.config.min_extra)
        if self.store.identity(ident.address) is not None:
            raise ApiError(24)
        self._add_identity(ident, ident.label, now, publish=False)
        self._reload_identities()
        return ident.address

    @locked
    def join_chan(self, passphrase: str | bytes, address: str, now: int | None = None) -> None:
        """Join the chan ``passphrase`` whose address is ``address``: errors 1, address errors,
        18 (the name gives another address), 24 (already present)."""
        now = clock(now)
        name = passphrase_arg(passphrase)
        text, _ = check_address(address, streams=self.config.streams)
        try:
            gen = join_chan(name, text)
        except InvalidAddress:
            raise ApiError(18) from None
        ident = Identity.from_generated(
            gen, chan=True, nonce_trials_per_byte=self.config.min_ntpb, extra_bytes=self.config.min_extra,
            label=chan_label(name),
        )
        if self.store.identity(ident.address) is not None:
            raise ApiError(24)
        self._add_identity(ident, ident.label, now, publish=False)
        self._reload_identities()

    def _own(self, address: str) -> tuple[str, IdentityRow]:
        text, _ = check_address(address, streams=self.config.streams)
        row = self.store.identity(text)
        if row is None:
            raise ApiError(13)
        return text, row

    def _forget_identity(self, address: str) -> None:
        with self.store.tx():
            self.store.delete_identity(address)
            self.store.delete_jobs_for("pubkey", address)
        self._reload_identities()

    @locked
    def leave_chan(self, address: str) -> None:
        """Leave a chan: errors 13 (not found), 25 (not a chan)."""
        text, row = self._own(address)
        if not row.chan:
            raise ApiError(25)
        self._forget_identity(text)

    @locked
    def delete_address(self, address: str) -> None:
        """Delete an own address and its keys (error 13 if unknown)."""
        text, _ = self._own(address)
        self._forget_identity(text)

    @locked
    def enable_address(self, address: str, enable: bool = True) -> None:
        """Enable or disable an own address (disabled: no decryption, no getpubkey answers, no sending)."""
        text, _ = self._own(address)
        self.store.set_identity_enabled(text, bool_arg(enable, "enable"))
        self._reload_identities()

    @locked
    def set_label(self, address: str, label: str | bytes) -> None:
        """Change the label of an own address."""
        text, _ = self._own(address)
        self.store.set_identity_label(text, label_arg(label))

    @locked
    def list_addresses(self) -> list[dict[str, Any]]:
        """Own identities: {label, address, stream, enabled, chan}, in creation order."""
        return [
            {"label": r.label, "address": r.address, "stream": r.stream, "enabled": r.enabled, "chan": r.chan}
            for r in self.store.identities()
        ]

    @locked
    def identity(self, address: str) -> Identity | None:
        """The own identity with this address (enabled or not), or None."""
        return self._ids.get(normalise_address(address))

    # ------------------------------------------------------------------------ address book, subscriptions, lists

    @locked
    def list_addressbook(self, label: str | bytes | None = None) -> list[dict[str, str]]:
        """Address book entries {label, address}; only those with exactly ``label`` if given."""
        wanted = None if label is None else label_arg(label)
        return [{"label": lb, "address": a} for a, lb in self.store.addressbook() if wanted is None or lb == wanted]

    @locked
    def add_addressbook(self, address: str, label: str | bytes = "") -> str:
        """Add an address book entry; the canonical address. Errors: address, 16 (present), 17."""
        text_label = label_arg(label)
        text, _ = check_address(address, streams=self.config.streams)
        if not self.store.add_addressbook(text, text_label):
            raise ApiError(16)
        self._reload_trusted()
        return text

    @locked
    def delete_addressbook(self, address: str) -> str:
        """Delete an address book entry if it exists; the canonical address."""
        text, _ = check_address(address, streams=self.config.streams)
        self.store.delete_addressbook(text)
        self._reload_trusted()
        return text

    @locked
    def list_subscriptions(self) -> list[dict[str, Any]]:
        """Subscriptions {label, address, enabled}."""
        return [{"label": lb, "address": a, "enabled": e} for a, lb, e in self.store.subscriptions()]

    @locked
    def add_subscription(
        self, address: str, label: str | bytes = "", enabled: bool = True, now: int | None = None
    ) -> str:
        """Follow the broadcasts of ``address``: errors 17, address errors, 16 (already subscribed).

        For a v4 address the v5 broadcasts already in the inventory are opened at once.
        """
        text_label = label_arg(label)
        text, a = check_address(address, streams=self.config.streams)
        if not self.store.add_subscription(text, text_label, enabled):
            raise ApiError(16, ALREADY_SUBSCRIBED)
        self._reload_contacts()
        if enabled and a.version == 4 and self._inventory_lookup is not None:
            now = clock(now)
            for obj in self._lookup(address_key_and_tag(a.version, a.stream, a.ripe)[1]):
                try:
                    p = parse_object(obj)
                except (MalformedMessage, InvalidObject):
                    continue
                if p.header.object_type == OBJECT_BROADCAST:
                    self._receive_broadcast(p, now)
        return text

    @locked
    def delete_subscription(self, address: str) -> None:
        """Stop following ``address`` (no validation, like the reference)."""
        self.store.delete_subscription(normalise_address(address))
        self._reload_contacts()

    @locked
    def access_mode(self) -> str:
        """``black`` (block listed senders, the default) or ``white`` (accept only listed ones)."""
        return self.store.get_setting("blackwhitelist", "black") or "black"

    @locked
    def set_access_mode(self, mode: str) -> None:
        """Choose the black (default) or white list mode."""
        if mode not in ("black", "white"):
            raise ApiError(0, f"the list mode must be 'black' or 'white', not {mode!r}")
        self.store.set_setting("blackwhitelist", mode)
        self._reload_contacts()

    @locked
    def add_to_list(self, which: str, address: str, label: str | bytes = "", enabled: bool = True) -> str:
        """Add ``address`` to the ``black`` or ``white`` list (16 if present)."""
        if which not in ("black", "white"):
            raise ApiError(0, f"the list must be 'black' or 'white', not {which!r}")
        text, _ = check_address(address, streams=self.config.streams)
        if not self.store.add_access(which, text, label_arg(label), enabled):
            raise ApiError(16)
        self._reload_contacts()
        return text

    @locked
    def remove_from_list(self, which: str, address: str) -> None:
        """Remove ``address`` from the ``black`` or ``white`` list if it is there."""
        self.store.delete_access(which, normalise_address(address))
        self._reload_contacts()

    @locked
    def list_entries(self, which: str) -> list[dict[str, Any]]:
        """Entries {label, address, enabled} of the ``black`` or ``white`` list."""
        return [{"label": lb, "address": a, "enabled": e} for a, lb, e in self.store.access_list(which)]
