"""The inbox and sent folders as the API shows them (spec 14.3 records, 14.4 queries,
trash and undelete)."""

from __future__ import annotations

from typing import Any

from bmnode.mailbox.args import bool_arg, hex_arg
from bmnode.mailbox.base import MailboxBase, locked
from bmnode.mailbox.errors import normalise_address
from bmnode.store.mailbox import InboxRow, SentRow

__all__ = ["FoldersMixin"]


class FoldersMixin(MailboxBase):
    """Inbox and sent queries, read flags, trash, undelete, delete-and-vacuum."""

    @staticmethod
    def _inbox_record(r: InboxRow) -> dict[str, Any]:
        return {
            "msgid": r.msgid.hex(), "toAddress": r.to_address, "fromAddress": r.from_address, "subject": r.subject,
            "message": r.body, "encodingType": r.encoding, "receivedTime": r.received, "read": int(r.read),
        }

    @staticmethod
    def _sent_record(r: SentRow) -> dict[str, Any]:
        return {
            "msgid": r.msgid.hex(), "toAddress": r.to_address, "fromAddress": r.from_address, "subject": r.subject,
            "message": r.body, "encodingType": r.encoding, "lastActionTime": r.last_action, "status": r.status,
            "ackData": r.ackdata.hex(),
        }

    @locked
    def inbox_messages(self) -> list[dict[str, Any]]:
        """Inbox records (14.3; subject/message as text) of the inbox folder, by received time."""
        return [self._inbox_record(r) for r in self.store.inbox("inbox")]

    @locked
    def inbox_message_ids(self) -> list[str]:
        """msgids (hex) of the inbox folder, by received time."""
        return [r.msgid.hex() for r in self.store.inbox("inbox")]

    @locked
    def inbox_message(self, msgid: str | bytes, read: bool | None = None) -> dict[str, Any] | None:
        """One inbox record (any folder) or None; ``read`` (bool) first sets its read flag."""
        mid = hex_arg(msgid, "msgid")
        if read is not None:
            self.store.set_inbox_read(mid, bool_arg(read, "readStatus"))
        row = self.store.inbox_message(mid)
        return None if row is None else self._inbox_record(row)

    @locked
    def inbox_messages_by_receiver(self, to_address: str) -> list[dict[str, Any]]:
        """Inbox records of the inbox folder sent to ``to_address``."""
        return [self._inbox_record(r) for r in self.store.inbox("inbox", normalise_address(to_address))]

    @locked
    def sent_messages(self) -> list[dict[str, Any]]:
        """Sent records (14.3) of the sent folder, by last action time."""
        return [self._sent_record(r) for r in self.store.sent_list("sent")]

    @locked
    def sent_message_ids(self) -> list[str]:
        """msgids (hex) of the sent folder, by last action time."""
        return [r.msgid.hex() for r in self.store.sent_list("sent")]

    @locked
    def sent_message(self, msgid: str | bytes) -> dict[str, Any] | None:
        """The sent record with this msgid (any folder), or None."""
        row = self.store.sent_by_msgid(hex_arg(msgid, "msgid"))
        return None if row is None else self._sent_record(row)

    @locked
    def sent_message_by_ackdata(self, ackdata: str | bytes) -> dict[str, Any] | None:
        """The sent record with this ackdata (any folder), or None."""
        row = self.store.sent_by_ackdata(hex_arg(ackdata, "ackData"))
        return None if row is None else self._sent_record(row)

    @locked
    def sent_messages_by_sender(self, from_address: str) -> list[dict[str, Any]]:
        """Sent records of the sent folder from ``from_address``."""
        return [self._sent_record(r) for r in self.store.sent_list("sent", normalise_address(from_address))]

    @locked
    def trash_message(self, msgid: str | bytes) -> int:
        """Move inbox and sent entries with this msgid to the trash; how many moved."""
        mid = hex_arg(msgid, "msgid")
        with self.store.tx():
            return self.store.set_inbox_folder(mid, "trash") + self.store.set_sent_folder(folder="trash", msgid=mid)

    @locked
    def trash_inbox_message(self, msgid: str | bytes) -> int:
        """Move the inbox entry with this msgid to the trash; how many moved."""
        return self.store.set_inbox_folder(hex_arg(msgid, "msgid"), "trash")

    @locked
    def trash_sent_message(self, msgid: str | bytes) -> int:
        """Move the sent entry with this msgid to the trash; how many moved."""
        return self.store.set_sent_folder(folder="trash", msgid=hex_arg(msgid, "msgid"))

    @locked
    def trash_sent_message_by_ackdata(self, ackdata: str | bytes) -> int:
        """Move the sent entry with this ackdata to the trash; how many moved."""
        return self.store.set_sent_folder(folder="trash", ackdata=hex_arg(ackdata, "ackData"))

    @locked
    def undelete_message(self, msgid: str | bytes) -> int:
        """Move trashed inbox/sent entries with this msgid back; how many moved."""
        mid = hex_arg(msgid, "msgid")
        with self.store.tx():
            return self.store.set_inbox_folder(mid, "inbox") + self.store.set_sent_folder(folder="sent", msgid=mid)

    @locked
    def delete_and_vacuum(self) -> int:
        """Delete every trashed message and compact the database; how many were deleted."""
        with self.store.tx():
            n = self.store.delete_trashed()
        self.store.vacuum()
        return n
