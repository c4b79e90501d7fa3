# SPDX-License-Identifier: Apache-2.0
"""The emulated aarch64 board as a TVM RPC device (``tvm-qnn device start``).

The server runs under qemu-user with the device's aarch64 Python; everything else (the tracker,
the secret key, the handshake deadline) is the host's :class:`~tvm_qnn.runtime.rpc.RPCDevice`.
"""

from __future__ import annotations

import os

from ...runtime.rpc import LOOPBACK, RemoteDevice, RPCDevice, run_remote
from .emulator import EmulatedDevice


class EmulatedRPCDevice(RPCDevice):
    """Tracker + RPC server of the emulated aarch64 device (loopback only); a context manager.

    Parameters
    ----------
    key : str
        The device's name, what clients ask for (e.g. the board name); the server registers
        under a secret key made from it (:class:`~tvm_qnn.runtime.rpc.RPCDevice`).
    tracker_port : int, optional
        Use a tracker already listening on this loopback port instead of starting one.
    """

    what = "emulated RPC server"

    def __init__(self, key: str = "rasp4b", tracker_port: int | None = None):
        super().__init__(key, tracker_port)
        self.device = EmulatedDevice()

    def _prepare(self) -> None:
        # Built on first use (minutes), after the check that a given tracker answers.
        self.device.ensure()

    def _server_command(self, args):
        env = dict(os.environ, PYTHONPATH=str(self.device.site), TVM_NUM_THREADS="1")
        python = self.device.sysroot / "usr" / "bin" / "python3.11"
        return ["qemu-aarch64", "-L", str(self.device.sysroot), str(python), *args], env


__all__ = ["LOOPBACK", "EmulatedRPCDevice", "RemoteDevice", "run_remote"]
