"""The wire between the trusted harness and a sandboxed process: framed messages over a Unix socket.

A frame is an 8-byte header (JSON length, payload length, both uint32 little-endian), a JSON object
and raw payload bytes (a batch of tokens, a few numbers). File descriptors (the logits memfd) travel
from the trusted side to the sandbox only, as SCM_RIGHTS on the first byte of a frame. The trusted
side reads with plain recv(), so descriptors a sandbox tries to send it are discarded by the kernel,
and it treats every size, every JSON value and every message order as hostile: a frame over its
limits or malformed is a ProtocolError, which the caller charges to the candidate.

`LogitsBuffer` is the CPU transport of the scoring: a memfd the scorer creates, seals against
shrinking and growing (so the sandbox cannot truncate it under the scorer's mapping), maps, and
passes to a model process, which writes float32 logits into it.
"""

from __future__ import annotations

import array
import contextlib
import json
import mmap
import os
import select
import socket
import struct

HEADER = struct.Struct("<II")
MAX_JSON = 1 << 16

F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW = 0x0001, 0x0002, 0x0004


class ChannelClosed(EOFError):
    pass


class ProtocolError(ValueError):
    """The other side sent something that is not a well-formed message within the limits."""


class Channel:
    def __init__(self, sock: socket.socket, max_payload: int = 1 << 26):
        self.sock = sock
        self.max_payload = max_payload
        self._buf = bytearray()
        self.sock.setblocking(True)

    @classmethod
    def pair(cls, max_payload: int = 1 << 26) -> tuple[Channel, socket.socket]:
        """(the trusted end, the socket to hand to the child; its fd must be inheritable)."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        b.set_inheritable(True)
        return cls(a, max_payload), b

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: dict, payload: bytes | memoryview = b"", fds: tuple[int, ...] = ()) -> None:
        body = json.dumps(msg, separators=(",", ":")).encode()
        head = HEADER.pack(len(body), len(payload)) + body
        if fds:
            self.sock.sendmsg([head[:1]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            head = head[1:]
        self.sock.sendall(head)
        if len(payload):
            self.sock.sendall(payload)

    def recv(self, timeout: float | None = None, with_fds: bool = False):
        """(msg, payload[, fds]) of the next frame; None on timeout. Raises ChannelClosed at EOF."""
        fds: list[int] = []
        while True:
            frame = self._take()
            if frame is not None:
                return (*frame, fds) if with_fds else frame
            if timeout is not None:
                r, _, _ = select.select([self.sock], [], [], timeout)
                if not r:
                    return None
            try:
                data, fds = self._read(with_fds, fds)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                raise ChannelClosed("the other side closed the channel")
            self._buf += data

    def _read(self, with_fds: bool, fds: list[int]):
        if not with_fds:
            return self.sock.recv(1 << 20), fds
        data, anc, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4))
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(raw[: len(raw) - len(raw) % 4])
                fds.extend(a)
        return data, fds

    def _take(self):
        if len(self._buf) < HEADER.size:
            return None
        nj, npay = HEADER.unpack_from(self._buf)
        if nj > MAX_JSON or npay > self.max_payload:
            raise ProtocolError(f"a frame of {nj} + {npay} bytes is over the limits")
        end = HEADER.size + nj + npay
        if len(self._buf) < end:
            return None
        try:
            msg = json.loads(bytes(self._buf[HEADER.size : HEADER.size + nj]))
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"a malformed message: {e}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            raise ProtocolError("a message without an op")
        payload = bytes(self._buf[HEADER.size + nj : end])
        del self._buf[:end]
        return msg, payload

    def close(self) -> None:
        self.sock.close()


class LogitsBuffer:
    """A sealed memfd of `nbytes` mapped by the scorer; the model process writes into its own mapping."""

    def __init__(self, nbytes: int, name: str = "logits"):
        self.nbytes = int(nbytes)
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, self.nbytes)
        import fcntl

        fcntl.fcntl(self.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
        self.map = mmap.mmap(self.fd, self.nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a numpy view still alive: the GC unmaps it
            self.map.close()
        os.close(self.fd)
