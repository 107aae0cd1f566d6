"""Reading the lab's packet captures (``tcpdump -w``): one reader for the experiments and the attacker,
built on scapy's ``RawPcapReader`` (classic pcap in either byte order, micro- or nanosecond timestamps;
pcapng too)."""
from __future__ import annotations

from typing import Iterator

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader


def pcap_frames(path: str) -> Iterator[tuple[float, bytes]]:
    """(time in seconds, frame bytes) of each record; nothing for a missing, empty or unreadable file,
    and a record cut short at the end (a capture stopped mid-write) ends the list."""
    try:
        reader = RawPcapReader(path)
    except (OSError, Scapy_Exception, EOFError):
        return
    with reader:
        nano = getattr(reader, "nano", False)
        try:
            for frame, meta in reader:
                if hasattr(meta, "tshigh"):   # pcapng: 64-bit count of tsresol units
                    stamp = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
                else:
                    stamp = meta.sec + meta.usec * (1e-9 if nano else 1e-6)
                yield stamp, bytes(frame)
        except (OSError, Scapy_Exception, EOFError):
            return
