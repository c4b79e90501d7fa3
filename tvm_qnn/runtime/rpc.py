# SPDX-License-Identifier: Apache-2.0
"""TVM RPC devices on loopback: a tracker and a server, the way a board serves TVM.

:class:`RPCDevice` runs TVM's tracker and server (:mod:`tvm_qnn.runtime.rpc_serve`) with this
host's Python (the tuning runner and its tests use it); the emulated ARM board
(:class:`tvm_qnn.target.arm.device.EmulatedRPCDevice`) is the same with its server under
qemu. :class:`RemoteDevice` names any device registered with a tracker, a real board included.

What a device started here trusts (README, "What the RPC device trusts"): both processes listen
on loopback only; the server registers under a secret key ``NAME.SECRET``, which its tracker
never shows, kept for the user who started it in a file only they can read
(:func:`key_file`); a client names the device ``NAME@127.0.0.1:PORT`` and the key is read from
there. So other users of the machine cannot ask for the device or upload code to it; processes
of the same user can (they can read the file), and so can root.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TvmQnnError
from ..knobs import cache_dir
from .rpc_serve import KEY_ENV, key_name, new_key, redact

LOOPBACK = "127.0.0.1"
_SERVE = Path(__file__).with_name("rpc_serve.py")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
logger = logging.getLogger("tvm_qnn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _spawn(cmd: list[str], env: dict) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so :func:`_terminate` stops its children with it),
    its stderr to a temporary file (a pipe nobody reads blocks a chatty process)."""
    log = tempfile.TemporaryFile(mode="w+")
    try:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    except BaseException:
        log.close()
        raise
    proc.log = log
    return proc


def _exit_message(proc: subprocess.Popen, what: str) -> str:
    proc.log.seek(0)
    return f"the {what} exited (code {proc.returncode}): {proc.log.read()[-1500:].strip()}"


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TvmQnnError(_exit_message(proc, what))
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.3)
    raise TvmQnnError(f"the {what} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s")


def tracker_summary(host: str, port: int, timeout: float = 5.0) -> dict:
    """The summary of the TVM RPC tracker at ``host:port``; a :class:`TvmQnnError` naming the
    address when none answers within ``timeout`` seconds (TVM's own client retries a refused
    connection for 60 s, then raises a bare RuntimeError)."""
    from tvm.rpc import base

    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise TvmQnnError(f"{where} is not a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.SUMMARY])
            code, summary = base.recvjson(sock)
    except (OSError, ValueError, struct.error) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or "timeout"
        raise TvmQnnError(f"no TVM RPC tracker answers at {where} ({why})") from None
    if code != base.TrackerCode.SUCCESS:
        raise TvmQnnError(f"the RPC tracker at {where} refused its summary: {summary!r}")
    return summary


def registered_keys(summary: dict) -> list[str]:
    """The keys of the servers in a tracker summary (as the tracker shows them)."""
    return [s.get("key", "").partition(":")[2] for s in summary.get("server_info", [])]


def key_file(name: str, host: str, port: int) -> Path:
    """Where the secret key of device ``name`` behind the tracker ``host:port`` is kept (a
    line, mode 0600, in a folder only its user can enter)."""
    return Path(cache_dir()) / "rpc-keys" / f"{name}@{host}:{port}"


def _store_key(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.replace(tmp, path)


def stored_key(name: str, host: str, port: int) -> str | None:
    """The secret key kept for device ``name`` behind ``host:port``, or None."""
    if not _NAME.fullmatch(name):
        return None
    try:
        return key_file(name, host, port).read_text().strip() or None
    except OSError:
        return None


class RPCDevice:
    """Tracker + RPC server on loopback, this host's Python; a context manager.

    The server registers under ``KEY.SECRET`` (128 random bits, new for each device), kept in
    :func:`key_file` while the device runs: a client asks for ``KEY@127.0.0.1:PORT`` and the
    secret is read from there (:meth:`RemoteDevice.parse`); :attr:`remote` carries it.

    Parameters
    ----------
    key : str
        The device's name, what clients ask for (letters, digits, ``_.-``).
    tracker_port : int, optional
        Use a tracker already listening on this loopback port instead of starting one. TVM's
        own tracker shows every key to anyone who asks: there the secret protects nothing (a
        warning says so); the tracker this class starts does not show it.
    """

    what = "RPC server"

    def __init__(self, key: str, tracker_port: int | None = None):
        if not _NAME.fullmatch(key):
            raise TvmQnnError(f"device key {key!r}: letters, digits and _.- only "
                              "(e.g. rasp4b)")
        self.key = key
        self.secret_key = new_key(key)
        self.tracker_port = tracker_port
        self._tracker: subprocess.Popen | None = None
        self._server: subprocess.Popen | None = None
        self._key_file: Path | None = None

    @property
    def remote(self) -> RemoteDevice:
        """This device as the tracker knows it (for ``Artifact.run_on`` and ``tune``)."""
        if self.tracker_port is None:
            raise TvmQnnError("the device is not started")
        return RemoteDevice(self.secret_key, self.tracker_port)

    @property
    def secret_file(self) -> Path | None:
        """The file that holds :attr:`secret_key` while the device runs (:func:`key_file`)."""
        return self._key_file

    def _prepare(self) -> None:
        """Make the device ready to serve (first thing :meth:`start` does, once it knows the
        tracker answers; the emulated board builds itself here)."""

    def _server_command(self, args: list[str]) -> tuple[list[str], dict]:
        """The command (and environment) that runs ``python args`` on the device."""
        return [sys.executable, *args], dict(os.environ)

    def start(self, timeout: float = 180) -> RPCDevice:
        """Start the tracker (unless given) and the server; wait until it is registered.

        Raises :class:`TvmQnnError` at once when the given tracker does not answer; on any
        failure (Ctrl-C included), everything this call started is stopped.
        """
        try:
            if self.tracker_port is not None:
                tracker_summary(LOOPBACK, self.tracker_port)
            self._prepare()
            if self.tracker_port is None:
                port = _free_port()
                self._tracker = _spawn([sys.executable, "-P", str(_SERVE), "tracker",
                                        "--host", LOOPBACK, "--port", str(port)],
                                       dict(os.environ))
                self.tracker_port = port
                _wait_for_port(port, self._tracker, "RPC tracker", 60)
            self._key_file = key_file(self.key, LOOPBACK, self.tracker_port)
            _store_key(self._key_file, self.secret_key)
            self.start_server(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_server(self, timeout: float = 180) -> None:
        """(Re)start the server alone, e.g. after :meth:`stop_server`; on failure it is
        stopped again."""
        if self.tracker_port is None:
            raise TvmQnnError("the device is not started")
        cmd, env = self._server_command(
            ["-P", str(_SERVE), "server", "--host", LOOPBACK, "--port", str(_free_port()),
             "--tracker-port", str(self.tracker_port)])
        # The key goes in the environment: the command line is readable by every local user.
        env[KEY_ENV] = self.secret_key
        try:
            self._server = _spawn(cmd, env)
            self._wait_registered(timeout)
        except BaseException:
            self.stop_server()
            raise

    def _wait_registered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._server.poll() is not None:
                raise TvmQnnError(_exit_message(self._server, self.what))
            keys = registered_keys(tracker_summary(LOOPBACK, self.tracker_port))
            if self.secret_key in keys:
                logger.warning("the tracker at %s:%d shows device keys to anyone who asks "
                               "(TVM's own tracker does): the secret key of %r protects "
                               "nothing there", LOOPBACK, self.tracker_port, self.key)
                return
            if redact(self.secret_key) in keys:
                return
            if time.monotonic() > deadline:
                raise TvmQnnError(f"the {self.what} did not register key {self.key!r} with the "
                                  f"tracker within {timeout:.0f} s")
            time.sleep(0.5)

    def stop_server(self) -> None:
        """Kill the server (the tracker stays): what a board that dies looks like."""
        _terminate(self._server)
        self._server = None

    def stop(self) -> None:
        """Stop the server and the tracker this object started; forget the key file."""
        self.stop_server()
        if self._tracker is not None:
            _terminate(self._tracker)
            self._tracker = None
            self.tracker_port = None
        if self._key_file is not None:
            try:  # a later device of the same name may have put its own key there
                mine = self._key_file.read_text().strip() == self.secret_key
            except OSError:
                mine = False
            if mine:
                self._key_file.unlink(missing_ok=True)
            self._key_file = None

    def __enter__(self) -> RPCDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen | None) -> None:
    """Stop ``proc`` and every process of its group (it was started in a new session)."""
    import signal

    if proc is None:
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=10)
                if sig == signal.SIGTERM:
                    # The group leader is gone; make sure no worker of it outlives it.
                    os.killpg(proc.pid, signal.SIGKILL)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return
    finally:
        proc.log.close()


@dataclass(frozen=True)
class RemoteDevice:
    """A device registered with a TVM RPC tracker: a board running
    ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``, or ``tvm-qnn device start``.

    ``key`` is what the tracker is asked for (``NAME.SECRET`` for a device with a secret key;
    it is left out of ``repr`` and messages, which show :func:`redact` of it).
    """

    key: str = field(repr=False)
    tracker_port: int
    tracker_host: str = LOOPBACK

    @classmethod
    def parse(cls, spec: str) -> RemoteDevice:
        """``KEY@HOST:PORT`` (or ``KEY@PORT`` on loopback) → a RemoteDevice. A KEY with a
        secret key kept for that tracker (:func:`key_file`) stands for that key."""
        key, _, where = spec.partition("@")
        host, _, port = where.rpartition(":")
        if not key or not port.isdigit():
            raise TvmQnnError(f"device {spec!r}: expected KEY@HOST:PORT "
                              "(e.g. rasp4b@127.0.0.1:9190)")
        host = host or LOOPBACK
        return cls(stored_key(key, host, int(port)) or key, int(port), host)

    @property
    def name(self) -> str:
        """The key without its secret."""
        return key_name(self.key)

    def __str__(self) -> str:
        return f"{redact(self.key)}@{self.tracker_host}:{self.tracker_port}"

    def check(self, timeout: float = 5.0) -> None:
        """Raise :class:`TvmQnnError` unless the tracker answers within ``timeout`` seconds
        and has a server registered under this key (a request for a key no server has waits
        forever). The message names the address and the keys the tracker has."""
        keys = registered_keys(tracker_summary(self.tracker_host, self.tracker_port, timeout))
        if self.key in keys or redact(self.key) in keys:
            return
        where = f"{self.tracker_host}:{self.tracker_port}"
        hint = ""
        if self.key == self.name and any(key_name(k) == self.name for k in keys):
            path = key_file(self.name, self.tracker_host, self.tracker_port)
            hint = (f"; {self.name!r} there has a secret key, which tvm-qnn device start keeps "
                    f"for the user who ran it in {path}")
        shown = ", ".join(sorted(redact(k) for k in keys)) or "none"
        raise TvmQnnError(f"the RPC tracker at {where} has no device {redact(self.key)!r} "
                          f"(its devices: {shown}){hint}")


def run_remote(library: str | os.PathLike, inputs: list[np.ndarray], key: str,
               tracker_port: int, tracker_host: str = LOOPBACK,
               timeout: float = 600) -> list[np.ndarray]:
    """Run ``main`` of an exported library on a device registered with a tracker."""
    from tvm import relax, rpc

    RemoteDevice(key, tracker_port, tracker_host).check()
    remote = rpc.connect_tracker(tracker_host, tracker_port).request(
        key, priority=1, session_timeout=timeout)
    remote.upload(str(library))
    module = remote.load_module(os.path.basename(str(library)))
    vm = relax.VirtualMachine(module, remote.cpu())
    import tvm

    args = [tvm.runtime.tensor(np.ascontiguousarray(a), remote.cpu()) for a in inputs]
    out = vm["main"](*args)
    outs = [out] if hasattr(out, "numpy") else list(out)
    return [o.numpy() for o in outs]


__all__ = ["LOOPBACK", "RPCDevice", "RemoteDevice", "key_file", "registered_keys",
           "run_remote", "stored_key", "tracker_summary"]
