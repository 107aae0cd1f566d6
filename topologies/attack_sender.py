"""Send prepared Ethernet frames from inside the attacker's namespace (``topologies.attacker``).

    python -m topologies.attack_sender IFACE FRAMES_FILE [--gap SECONDS]

FRAMES_FILE holds records of a 4-octet big-endian length followed by that many octets of an Ethernet frame.
Frames leave by an AF_PACKET socket bound to IFACE, untouched (spoofed sources, hop limits and extension
headers stay as built). Prints ``sent N`` and exits 0; a bad file or interface ends with one line, status 2.
"""
from __future__ import annotations

import argparse
import socket
import struct
import sys
import time


def read_frames(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    frames, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError(f"{path}: truncated length at octet {pos}")
        (length,) = struct.unpack_from("!I", data, pos)
        pos += 4
        if pos + length > len(data):
            raise ValueError(f"{path}: truncated frame at octet {pos}")
        frames.append(data[pos:pos + length])
        pos += length
    return frames


def write_frames(path: str, frames) -> None:
    with open(path, "wb") as f:
        for frame in frames:
            f.write(struct.pack("!I", len(frame)) + bytes(frame))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="attack_sender")
    parser.add_argument("iface")
    parser.add_argument("frames")
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between frames")
    args = parser.parse_args(argv)
    try:
        frames = read_frames(args.frames)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        sock.bind((args.iface, 0))
    except (OSError, ValueError) as exc:
        print(f"attack_sender: {exc}", file=sys.stderr)
        return 2
    sent = 0
    for frame in frames:
        try:
            sock.send(frame)
            sent += 1
        except OSError as exc:   # e.g. a frame longer than the MTU: the others still go
            print(f"attack_sender: frame of {len(frame)} octets: {exc.strerror}", file=sys.stderr)
        if args.gap:
            time.sleep(args.gap)
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
