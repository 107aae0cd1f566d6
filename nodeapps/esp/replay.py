"""Anti-replay window of an inbound SA (RFC 4303 §3.4.3 and Appendix A).

Two steps, as in the RFC's receive processing: :meth:`ReplayWindow.check` before the ICV is verified
(cheap rejection of duplicates and old packets), :meth:`ReplayWindow.commit` only after it verified, so a
forged packet can never move the window.

The window is a Python int used as a bitmap: bit ``i`` set means sequence number ``top - i`` was received.
With extended sequence numbers only the low 32 bits travel; :meth:`check` infers the high half as in
RFC 4303 Appendix A2.2 and returns the full 64-bit number, which the caller passes to :meth:`commit` and uses
in the AAD.
"""
from __future__ import annotations

from .errors import ReplayError

MIN_WINDOW = 32  # RFC 4303 §3.4.3: a receiver window of at least 32
DEFAULT_WINDOW = 64
MAX_WINDOW = 1 << 16  # the bitmap is one integer of this many bits; larger buys nothing on these links
_LO_SPAN = 1 << 32


class ReplayWindow:
    __slots__ = ("size", "esn", "top", "bitmap", "_mask")

    def __init__(self, size: int = DEFAULT_WINDOW, esn: bool = False):
        if size.__class__ is not int or not MIN_WINDOW <= size <= MAX_WINDOW:
            raise ValueError(f"replay window must be an integer from {MIN_WINDOW} to {MAX_WINDOW}, got {size!r}")
        self.size = size
        self.esn = esn
        self.top = 0  # highest authenticated sequence number; 0 = nothing received yet
        self.bitmap = 0
        self._mask = (1 << size) - 1

    def check(self, seq_lo: int) -> int:
        """Full sequence number for ``seq_lo`` if it may be new; ReplayError otherwise."""
        top = self.top
        if self.esn:
            seq = self._infer(seq_lo)
        else:
            seq = seq_lo
            if seq == 0:
                # RFC 4303 §3.3.3: the first packet carries 1, so 0 was never sent under this SA.
                raise ReplayError("too_old", 0)
        if seq > top:
            return seq
        diff = top - seq
        if diff >= self.size:
            raise ReplayError("too_old", seq)
        if (self.bitmap >> diff) & 1:
            raise ReplayError("replayed", seq)
        return seq

    def commit(self, seq: int) -> None:
        """Mark authenticated ``seq`` (the value :meth:`check` returned) as received."""
        top = self.top
        if seq > top:
            shift = seq - top
            if shift >= self.size:
                self.bitmap = 1
            else:
                self.bitmap = ((self.bitmap << shift) | 1) & self._mask
            self.top = seq
        else:
            self.bitmap |= 1 << (top - seq)

    def resume_after(self, top: int) -> None:
        """After a restart: treat every sequence number up to ``top`` (the last one recorded) as received,
        so packets captured before the restart cannot be replayed into the new process."""
        if top > self.top:
            self.top = top
            self.bitmap = self._mask

    def _infer(self, seq_lo: int) -> int:
        # RFC 4303 Appendix A2.2: pick the high half that puts seq_lo nearest the window.
        top = self.top
        top_hi, top_lo = top >> 32, top & 0xFFFFFFFF
        bottom_lo = top_lo - self.size + 1
        if bottom_lo >= 0:  # case A: window inside one 2**32 block
            seq_hi = top_hi if seq_lo >= bottom_lo else top_hi + 1
        else:  # case B: window spans a block boundary
            seq_hi = top_hi - 1 if seq_lo >= bottom_lo + _LO_SPAN else top_hi
        seq = (seq_hi << 32) | seq_lo if seq_hi >= 0 else -1
        if seq <= 0:
            raise ReplayError("too_old", seq_lo)
        return seq

    def status(self) -> dict:
        return {"size": self.size, "highest": self.top, "esn": self.esn}
