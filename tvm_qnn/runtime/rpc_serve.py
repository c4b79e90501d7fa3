# SPDX-License-Identifier: Apache-2.0
"""The two processes of an RPC device: TVM's tracker and TVM's server, with what they lack on
a machine other people and programs share.

:class:`~tvm_qnn.runtime.rpc.RPCDevice` runs this file as a script,
``python -P rpc_serve.py tracker --port P`` and ``... server --port S --tracker-port P`` (the
server's key comes from ``$TVM_QNN_RPC_KEY``), also with the emulated board's Python, which has
TVM but not tvm_qnn: it imports only TVM and the standard library, so this one file also runs
on a real board (README, "What the RPC device trusts"). Both listen on loopback unless told
otherwise (``--host``).

**Secret device keys.** A tracker hands a device to any client that asks for its key, and TVM's
server accepts any client the tracker sent. A key ``NAME.SECRET`` (:func:`new_key`: 128 random
bits) can only be asked for by a client that knows it. TVM's tracker lists every key in its
summary, to anyone who connects (``python -m tvm.exec.query_rpc_tracker``); this one shows
``NAME.…FINGERPRINT`` instead (:func:`redact`). The server reads its key from the environment,
never its command line, which every local user can read (``/proc/PID/cmdline``; the
environment only its own user and root).

**A handshake deadline.** TVM's server accepts one connection at a time and reads its handshake
with no timeout: one idle connection to its port (a port scan, a client stuck before its first
byte) kept every session waiting until the peer went away (measured: none started within 90 s).
Here a connection that has not sent its whole handshake within :data:`HANDSHAKE_SECONDS` is
closed, and the server goes on to the next.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import select
import socket
import struct
import sys
import time

HANDSHAKE_SECONDS = 5.0
KEY_ENV = "TVM_QNN_RPC_KEY"
_SECRET_KEY = re.compile(r"(?P<name>.+)\.(?P<secret>[0-9a-f]{32})")
_SHOWN_KEY = re.compile(r"(?P<name>.+)\.…[0-9a-f]{6}")
_MAX_KEY_BYTES = 4096


def new_key(name: str) -> str:
    """A secret device key ``NAME.SECRET``: SECRET is 32 random hex digits."""
    return f"{name}.{secrets.token_hex(16)}"


def key_name(key: str) -> str:
    """The public part of a device key: ``NAME`` of ``NAME.SECRET`` and of its
    :func:`redact` form; other keys whole."""
    m = _SECRET_KEY.fullmatch(key) or _SHOWN_KEY.fullmatch(key)
    return m["name"] if m else key


def redact(key: str) -> str:
    """A device key as it may be shown: ``NAME.…`` and 6 hex digits of its SHA-256 (which tell
    two devices of one name apart and say nothing of the secret); other keys whole."""
    if not _SECRET_KEY.fullmatch(key):
        return key
    return f"{key_name(key)}.…{hashlib.sha256(key.encode()).hexdigest()[:6]}"


def redact_summary(summary: dict) -> dict:
    """A tracker summary with every secret key redacted (queue keys and ``server:KEY``)."""
    servers = [dict(s, key=f"server:{redact(s.get('key', '').partition(':')[2])}")
               for s in summary.get("server_info", [])]
    queues = {redact(k): v for k, v in summary.get("queue_info", {}).items()}
    return dict(summary, server_info=servers, queue_info=queues)


def serve_tracker(host: str, port: int) -> None:
    """Run TVM's tracker on ``host:port`` in this process, its summary redacted."""
    from tvm.rpc import tracker

    class RedactingHandler(tracker.TrackerServerHandler):
        def summary(self):
            return redact_summary(super().summary())

    # TVM's tracker thread builds its handler from this module attribute.
    tracker.TrackerServerHandler = RedactingHandler
    state = tracker.PopenTrackerServerState(host, port, port + 1, silent=True)
    state.thread.join()


def _handshake_arrived(conn: socket.socket, seconds: float) -> bool:
    """True once ``conn`` holds a whole handshake (magic, key length, key), left unread for
    TVM's loop; False if it has not arrived within ``seconds``. A bad magic counts as arrived:
    TVM's loop reads it and closes the connection itself."""
    from tvm.rpc import base

    deadline = time.monotonic() + seconds
    need = 8
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([conn], [], [], left)[0]:
            return False
        head = conn.recv(need, socket.MSG_PEEK)
        if not head:  # the peer closed before its handshake
            return False
        if len(head) >= 4 and struct.unpack("<i", head[:4])[0] != base.RPC_MAGIC:
            return True
        if len(head) >= 8 and need == 8:
            keylen = struct.unpack("<i", head[4:8])[0]
            if not 0 <= keylen <= _MAX_KEY_BYTES:
                return False
            need = 8 + keylen
        if len(head) >= need:
            return True
        time.sleep(0.02)  # part of it is here: wait for the rest


class _Refused:
    """Stands in for a connection closed for its late handshake: TVM's loop reads a bad magic
    from it and goes on, as after any bad handshake (a raised error would make it drop and
    renew its tracker registration)."""

    def recv(self, nbytes: int, *_flags) -> bytes:
        return b"\0" * nbytes

    def close(self) -> None:
        pass


class _HandshakeDeadline:
    """The server's listening socket: ``accept`` returns connections that sent a whole
    handshake within :data:`HANDSHAKE_SECONDS` (still blocking, as TVM's session loop needs
    them)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def accept(self):
        conn, addr = self._sock.accept()
        try:
            arrived = _handshake_arrived(conn, HANDSHAKE_SECONDS)
        except OSError:
            arrived = False
        if not arrived:
            conn.close()
            return _Refused(), addr
        return conn, addr


def serve(host: str, port: int, tracker: tuple[str, int], key: str) -> None:
    """Run TVM's RPC server on ``host:port`` in this process, registered with the tracker at
    ``tracker`` (host, port) under ``key``, with the handshake deadline."""
    from tvm.rpc import server

    listen_loop = server._listen_loop  # the one seam TVM's server has

    def guarded_loop(sock, *args):
        return listen_loop(_HandshakeDeadline(sock), *args)

    # TVM's server thread runs this module attribute, with the listening socket it bound.
    server._listen_loop = guarded_loop
    state = server.PopenRPCServerState(host, port, port + 1, tracker_addr=tracker, key=key,
                                       silent=True)
    state.thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rpc_serve", description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=["tracker", "server"])
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracker-host", default=None, help="server: the tracker's address "
                        "(default: --host)")
    parser.add_argument("--tracker-port", type=int, help="server: the tracker's port")
    args = parser.parse_args(argv)
    if args.role == "tracker":
        serve_tracker(args.host, args.port)
        return
    key = os.environ.pop(KEY_ENV, "")
    if not key or args.tracker_port is None:
        sys.exit(f"rpc_serve server: needs --tracker-port and the device key in ${KEY_ENV}")
    serve(args.host, args.port, (args.tracker_host or args.host, args.tracker_port), key)


__all__ = ["HANDSHAKE_SECONDS", "KEY_ENV", "key_name", "new_key", "redact", "redact_summary",
           "serve", "serve_tracker"]

if __name__ == "__main__":
    main()
