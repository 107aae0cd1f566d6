"""Sequence numbers that survive a restart: no (key, nonce) pair is used twice (RFC 4106 §3).

A node's configured SAs keep their keys across a restart of the node process, but a fresh process would
count again from sequence number 1, and AES-GCM's nonce is the SA's salt and that number: the same nonce
under the same key, which RFC 4106 §3 forbids. So every outbound SA sends only up to a *reservation*
(``SecurityAssociation.reserved``) that is on disk before it is used: the store writes "this SA may have
used numbers up to N" (write, fsync, rename), and only then lets the SA go on to N. A restarted process
starts each SA just above its recorded N. Reservations come in blocks and are renewed when half used, from
the node's loop (``maintain``), so the data path pays one comparison per packet and the disk sees a write
per block, not per packet.

Inbound SAs record the right edge of their replay window (at most every ``INBOUND_EVERY_S``); a restarted
receiver treats everything up to it as already received, so packets captured before the restart are not
accepted again. What arrived after the last record can be replayed into the new process once: the price of
not writing per packet (docs/esp.md).
"""
from __future__ import annotations

import json
import os

from nodeapps.esp.sa import SecurityAssociation

BLOCK = 1 << 20            # sequence numbers reserved per write
RENEW_BELOW = BLOCK // 2   # renew when fewer than this many are left
INBOUND_EVERY_S = 1.0


MAINTAIN_EVERY_S = 0.1     # at 100 k packets/s an SA uses 10 k numbers between checks, far below RENEW_BELOW

# The node process's store, if it has one: every SA built from the configuration is handed to it before it
# can send (``track``), wherever in the shell it is built.
_active: "SequenceStore | None" = None


def install(store: "SequenceStore | None") -> None:
    global _active
    _active = store


def active() -> "SequenceStore | None":
    return _active


def track(*sas: SecurityAssociation) -> None:
    """Put configured SAs under the process's store (no-op without one, e.g. in unit tests)."""
    if _active is not None:
        _active.adopt(sas)


class SequenceStoreError(ValueError):
    """The store file cannot be read or written; one line naming it."""


def _key(sa: SecurityAssociation) -> str:
    return f"{sa.name}/{sa.spi:#010x}"


class SequenceStore:
    def __init__(self, path: str):
        self.path = path
        self.sas: list[SecurityAssociation] = []
        self.recorded: dict[str, int] = {}
        self.next_inbound_write = 0.0
        self.writes = 0
        self.stored = self.load()   # what an earlier process of this node recorded

    def load(self) -> dict[str, int]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise SequenceStoreError(f"sequence store {self.path}: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, int) and v >= 0 for v in data.values()):
            raise SequenceStoreError(f"sequence store {self.path}: not a mapping of SA to sequence number")
        return data

    def adopt(self, sas) -> None:
        """Take over configured SAs as they are built: each outbound one continues above what an earlier
        process of this node may have used, each inbound one rejects what it received; the first
        reservations are on disk before this returns, so before anything is sent."""
        new = [sa for sa in sas if sa is not None and all(sa is not known for known in self.sas)]
        if not new:
            return
        for sa in new:
            last = self.stored.get(_key(sa), 0)
            if sa.outbound:
                sa.seq = max(sa.seq, last)
                sa.reserved = sa.seq + BLOCK
            else:
                sa.window.resume_after(last)
        self.sas += new
        self._write(self.next_inbound_write)

    def maintain(self, now: float) -> bool:
        """Renew reservations that run low (and record inbound edges now and then); True if it wrote."""
        due = now >= self.next_inbound_write and any(
            not sa.outbound and sa.window.top > self.recorded.get(_key(sa), 0) for sa in self.sas)
        renew = [sa for sa in self.sas if sa.outbound and sa.reserved - sa.seq < RENEW_BELOW]
        if not (due or renew):
            return False
        wanted = {_key(sa): sa.seq + BLOCK for sa in renew}
        self._write(now, wanted)
        for sa in renew:   # only now, with the record on disk, may the SA use the new block
            sa.reserved = wanted[_key(sa)]
        return True

    def _write(self, now: float, wanted: dict[str, int] | None = None) -> None:
        record = {}
        for sa in self.sas:
            key = _key(sa)
            record[key] = (wanted or {}).get(key, sa.reserved) if sa.outbound else sa.window.top
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise SequenceStoreError(f"sequence store {self.path}: {exc.strerror}") from None
        self.recorded = record
        self.writes += 1
        self.next_inbound_write = now + INBOUND_EVERY_S
