"""Local control socket: one JSON request line in, one JSON reply line out, then close.

Requests: {"cmd": "status"} and {"cmd": "events", "last": N}. Non-blocking, driven by the node's loop.
"""
from __future__ import annotations

import json
import os
import socket

MAX_REQUEST = 4096


class ControlServer:
    def __init__(self, path: str, handler):
        self.path = path
        self._handler = handler
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        """Serve every waiting client; each request is small and answered at once."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    reply = self._answer(self._read_line(conn))
                    conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
                except OSError:
                    pass  # client went away; nothing to clean up

    @staticmethod
    def _read_line(conn: socket.socket) -> bytes:
        data = b""
        while b"\n" not in data and len(data) < MAX_REQUEST:
            chunk = conn.recv(MAX_REQUEST)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0]

    def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line or b"{}")
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            return {"ok": True, "result": self._handler(request)}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, cmd: str, timeout: float = 2.0, **args) -> dict:
    """Client side: send one request, return the reply's result or raise OSError with the node's error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise OSError(f"node refused {cmd!r}: {reply.get('error')}")
    return reply["result"]
