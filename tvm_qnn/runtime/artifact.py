# SPDX-License-Identifier: Apache-2.0
"""A compiled model: run it, time it, export it, load it back."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass

import tvm
from tvm import relax

from ..errors import InputError, LibraryFileError, TvmQnnError
from .atomic import publish
from .inputs import check_input
from .library import runtime_module, write_library
from .profile import profile_calls
from .sidecar import check_library_path, library_digest, read_description
from .threads import use_threads
from .timing import evaluator_seconds


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of a model input."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class Artifact:
    """A model compiled by :func:`tvm_qnn.compile` (or loaded by :func:`tvm_qnn.load`).

    Attributes
    ----------
    inputs : list of TensorInfo
        The model inputs, in call order.
    target : str
        Description of the target it was compiled for.
    layers : list of dict
        One entry per conv2d/dense: name, kind, ``bitserial`` or not, bits, reason.
    threads : int or None
        Threads the code runs on (None: ``TVM_NUM_THREADS``, else this machine's physical
        cores); ``run`` and ``benchmark`` take ``threads=`` for one call.
    """

    def __init__(self, module, inputs: list[TensorInfo], target: str, layers: list[dict],
                 device=None, qnn_target=None, library: str | None = None, accel_layers=None,
                 threads: int | None = None, digest: dict | None = None,
                 kernels: dict | None = None):
        self.module = module
        self.threads = threads
        self.inputs = inputs
        self.target = target
        self.layers = layers
        self.device = device or tvm.cpu()
        self.qnn_target = qnn_target
        # A file of the code: the library it was loaded from (what export_library copies),
        # or one exported for runs on an emulated device.
        self._library = library
        # A loaded library's digest (as its description recorded it, else hashed here): what
        # export_library checks the copy against.
        self._loaded = (digest or library_digest(library)) if library is not None else None
        self.accel_layers = accel_layers or {}  # name -> AccelLayer (target "accel")
        # symbol -> scheduled layer PrimFunc (compiled in this process; not in a library file)
        self._kernels = kernels
        native = qnn_target is None or qnn_target.runs_here()
        self._vm = relax.VirtualMachine(module, self.device) if native else None

    def _arguments(self, args, kwargs):
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            kwargs, args = args[0], ()
        if kwargs:
            missing = [i.name for i in self.inputs if i.name not in kwargs]
            unknown = sorted(set(kwargs) - {i.name for i in self.inputs})
            if missing or unknown or args:
                raise InputError(f"missing inputs {missing}"
                                 + (f", unknown inputs {unknown}" if unknown else "")
                                 + f"; expected {self._expected()}")
            args = [kwargs[i.name] for i in self.inputs]
        if len(args) != len(self.inputs):
            raise InputError(f"got {len(args)} inputs; expected {self._expected()}")
        return [tvm.runtime.tensor(check_input(info.name, info.shape, info.dtype, value),
                                   self.device)
                for value, info in zip(args, self.inputs, strict=True)]

    def _expected(self) -> str:
        return ", ".join(f"{i.name}{list(i.shape)}:{i.dtype}" for i in self.inputs)

    def run(self, *args, threads: int | None = None, **kwargs):
        """Run the model on numpy inputs (positional, keyword or one dict).

        Returns one numpy array, or a list of them for several outputs. Code for another
        architecture (``arm_cpu``) runs on the target's emulated device. ``threads``: for this
        call (default :attr:`threads`); an input named ``threads`` goes in the dict form.
        Inputs are checked, not coerced (:mod:`tvm_qnn.runtime.inputs`): an array of another
        kind of dtype, an integer out of its input's range, NaN or infinity is refused with
        an :class:`~tvm_qnn.errors.InputError`.
        """
        if self._vm is None:
            outs = self._emulator().run_library(self._exported_library(),
                                                [a.numpy() for a in self._arguments(args,
                                                                                    kwargs)])
            return outs[0] if len(outs) == 1 else outs
        vm_args = self._arguments(args, kwargs)
        use_threads(self.threads if threads is None else threads)
        return _to_numpy(self._vm["main"](*vm_args))

    def profile(self, *args, threads: int | None = None, split: bool = False,
                **kwargs) -> list[dict]:
        """Where the time of one run goes. Inputs as for :meth:`run`.

        On a CPU target: one dict per compiled function the run calls, in order, each timed
        alone on its arguments from the run (:func:`tvm_qnn.runtime.profile.profile_calls`):
        ``function``, ``kind`` (``layer`` kernel, bit-plane ``pack`` before a layer, or
        ``op`` between layers), ``layer`` and ``ms``; ``runtime.profile.format_table`` prints
        them. ``split=True`` also splits each layer kernel's time into ``pack_ms`` (its input
        stage), ``kernel_ms`` (the branch sums) and ``epilogue_ms``
        (:mod:`tvm_qnn.runtime.kernel_split`; two more compilations per layer, and only for
        a model compiled in this process: a loaded library has no kernels to take apart).

        On the accelerator: one dict per conv2d/dense layer, in model order; offloaded
        layers (``device="accel"``) carry the cycle model: ``cycles``, ``time_us``,
        ``utilization`` (GEMM-core busy fraction, 0-1), ``efficiency``, ``dram_bytes``,
        ``gops``; the others say where they ran and why (``device="cpu"``, ``reason``).
        """
        if not self.accel_layers:
            return self._profile_cpu(args, kwargs, threads, split)
        for layer in self.accel_layers.values():
            layer.clear()
        self.run(*args, **kwargs)
        rows = []
        for row in self.layers:
            layer = self.accel_layers.get(row["name"])
            if layer is not None:
                rows.append(layer.profile())
            else:
                reason = row.get("offload_reason") or row.get("reason", "")
                rows.append({"name": row["name"], "kind": row["kind"], "device": "cpu",
                             "bitserial": row["bitserial"], "reason": reason})
        return rows

    def _profile_cpu(self, args, kwargs, threads, split: bool = False) -> list[dict]:
        if self._vm is None:
            self._emulator()  # the error when nothing here can run the code
            raise TvmQnnError(f"{self.target}: profile the code on the board (times under "
                              "emulation say nothing about it)")
        if split and self._kernels is None:
            raise TvmQnnError("profile(split=True) needs the model compiled in this process "
                              "(tvm_qnn.compile): a loaded library has no kernels to split")
        vm_args = self._arguments(args, kwargs)
        use_threads(self.threads if threads is None else threads)
        layers = [r["name"] for r in self.layers if r.get("bitserial")]
        if not split:
            return profile_calls(self.module, self.device, vm_args, layers)
        return profile_calls(self.module, self.device, vm_args, layers,
                             layer_kernels=self._kernels,
                             target=self.qnn_target.tvm_target, progress=True)

    def _emulator(self):
        emulator = self.qnn_target.emulator() if self.qnn_target is not None else None
        if emulator is None:
            why = self.qnn_target.why_not_here() if self.qnn_target is not None else ""
            raise TvmQnnError(f"code for {self.target} cannot run on this host"
                              f"{f' ({why})' if why else ''} and has no emulated device; "
                              "export it and run it on a machine that can")
        return emulator

    def run_on(self, device, *args, **kwargs):
        """Run the model on a device registered with a TVM RPC tracker.

        ``device`` is a :class:`~tvm_qnn.target.arm.device.RemoteDevice` or its spec
        ``"KEY@HOST:PORT"``: a board running TVM's ``rpc_server`` with ``--tracker``, or the
        emulated board of ``tvm-qnn device start``. The library is exported for the target,
        uploaded and run by the device's Relax VM; inputs as for :meth:`run`.
        """
        from .rpc import RemoteDevice, run_remote

        if isinstance(device, str):
            device = RemoteDevice.parse(device)
        arrays = [a.numpy() for a in self._arguments(args, kwargs)]
        outs = run_remote(self._exported_library(), arrays, device.key, device.tracker_port,
                          device.tracker_host)
        return outs[0] if len(outs) == 1 else outs

    def _exported_library(self) -> str:
        if self._library is None:
            folder = tempfile.mkdtemp(prefix="tvm_qnn_lib_")
            self._library = os.path.join(folder, "model.so")
            self.qnn_target.export_library(self.module, self._library)
        return self._library

    def benchmark(self, *args, number: int = 10, repeat: int = 5, min_repeat_ms: int = 0,
                  threads: int | None = None, **kwargs) -> float:
        """Median seconds per run, measured by TVM's ``time_evaluator`` (no Python overhead),
        on ``threads`` threads (default :attr:`threads`)."""
        if self._vm is None:
            self._emulator()  # the error when nothing here can run the code
            raise TvmQnnError(f"{self.target}: wall time under emulation says nothing about the "
                              "board; time it on the board (or with a model of the core)")
        self._vm.set_input("main", *self._arguments(args, kwargs))
        use_threads(self.threads if threads is None else threads)
        return evaluator_seconds(self._vm, "invoke_stateful", self.device, "main",
                                 number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)

    def assembly(self) -> str:
        """The generated machine code (assembly) of every compiled kernel.

        Only available before export (a loaded library has no source); empty string then.
        """
        root = runtime_module(self.module)
        out, stack = [], [root] if root is not None else []
        while stack:
            mod = stack.pop()
            stack.extend(mod.imports)
            if mod.kind == "llvm":
                try:
                    out.append(mod.inspect_source("asm"))
                except Exception:  # noqa: BLE001 - a loaded .so has no source to show
                    pass
        return "\n".join(out)

    def export_library(self, path: str | os.PathLike) -> str:
        """Write a shared library (and ``<path>.json`` with its input description).

        Both files are published together (:func:`tvm_qnn.runtime.atomic.publish`): on an error
        the previous pair stays as it was; a disk without room for the export is a
        :class:`~tvm_qnn.errors.LibraryFileError` (:mod:`tvm_qnn.runtime.library`). The
        description records the library's size and hash, so :func:`tvm_qnn.load` refuses a
        library that is not the one it describes. An artifact from :func:`tvm_qnn.load` copies
        the library it was loaded from (a loaded library has no code to write again).
        """
        path = os.fspath(path)
        check_library_path(path, writing=True)
        meta = {"inputs": [asdict(i) for i in self.inputs], "target": self.target,
                "target_alias": self.qnn_target.alias if self.qnn_target is not None else None,
                "layers": self.layers, "threads": self.threads}
        if self._loaded:
            export = functools.partial(shutil.copyfile, self._library)
        elif self.qnn_target is None:
            export = functools.partial(write_library, self.module)
        else:
            export = functools.partial(self.qnn_target.export_library, self.module)
        try:
            with publish() as temp:
                library = temp(path, executable=True)
                export(library)
                meta["library"] = library_digest(library)
                if self._loaded and meta["library"] != self._loaded:
                    raise LibraryFileError(f"{self._library} changed since it was loaded: "
                                           "load it again to export it")
                with open(temp(path + ".json"), "w", encoding="utf-8") as f:
                    json.dump(meta, f, indent=1)
        except OSError as err:
            raise LibraryFileError(f"cannot write {path}: {err.strerror or err}") from err
        return path

    def __repr__(self) -> str:
        n = sum(1 for layer in self.layers if layer.get("bitserial"))
        return (f"<tvm_qnn.Artifact {self.target}: {n}/{len(self.layers)} layers bit-serial, "
                f"inputs {self._expected()}>")


def _to_numpy(result):
    if isinstance(result, (tvm.runtime.Tensor,)):
        return result.numpy()
    if hasattr(result, "numpy"):
        return result.numpy()
    return [_to_numpy(r) for r in result]


def read_sidecar(path: str) -> tuple[dict, list[TensorInfo]]:
    """The description :meth:`Artifact.export_library` writes next to a library
    (``<path>.json``) and its inputs, once the library is checked to be the one it describes
    (:func:`tvm_qnn.runtime.sidecar.read_description`)."""
    meta = read_description(path)
    inputs = [TensorInfo(i["name"], tuple(i["shape"]), i["dtype"]) for i in meta["inputs"]]
    return meta, inputs
