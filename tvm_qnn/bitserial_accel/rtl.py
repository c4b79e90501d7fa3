# SPDX-License-Identifier: Apache-2.0
"""The GEMM core in Verilog, verilated for co-simulation (``Simulator.run(..., gemm="rtl")``).

``src/accel/rtl/gemm_core.v`` is the synthesizable GEMM core (docs/accelerator_rtl.md).
:func:`build_gemm_core` runs verilator on it with one configuration's block sizes and pipeline
depth and compiles the model with the C wrapper ``gemm_core_capi.cc`` into a shared library
(C interface: ``src/accel/gemm_rtl.h``). The simulator dlopens that library and sends every
GEMM plane pair through the verilated core, one clock at a time, while the accumulator SRAM
stays in the simulator. Nothing here is needed by the normal simulator: without verilator,
``gemm="rtl"`` raises :class:`RtlUnavailable` and everything else works.

Builds are cached in ``$TVM_QNN_CACHE_DIR/gemm-rtl-<hash>``, keyed on the sources, the
parameters and the verilator version.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

from .. import knobs
from ..errors import TvmQnnError
from .config import AccelConfig

LIB_NAME = "libtvm_qnn_gemm_rtl.so"
SOURCES = ("gemm_core.v", "gemm_core_capi.cc", "gemm_rtl.h")
_CHECKOUT_RTL = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "src",
                                             "accel", "rtl"))
# pip install copies the sources next to the package (CMakeLists.txt), for installs without
# the source tree.
_INSTALLED_RTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rtl")


class RtlUnavailable(TvmQnnError, RuntimeError):
    """The RTL model cannot be built here (no verilator, no C++ compiler or no sources)."""


def source_dir() -> str:
    """Folder with ``gemm_core.v`` and its C wrapper: the checkout's, else the installed copy."""
    for d in (_CHECKOUT_RTL, _INSTALLED_RTL):
        if os.path.exists(os.path.join(d, "gemm_core.v")):
            return d
    raise RtlUnavailable(f"the GEMM core's Verilog is missing (looked in {_CHECKOUT_RTL} and "
                         f"{_INSTALLED_RTL}); reinstall tvm_qnn")


def _source_path(name: str) -> str:
    d = source_dir()
    # In the checkout the C interface header sits one level up, shared with the simulator.
    for path in (os.path.join(d, name), os.path.join(d, "..", name)):
        if os.path.exists(path):
            return os.path.abspath(path)
    raise RtlUnavailable(f"{name} missing next to {d}")


@functools.lru_cache(maxsize=None)
def verilator_version() -> str | None:
    """``verilator --version`` (e.g. ``Verilator 5.006 2023-01-22``), or None if not installed."""
    if shutil.which("verilator") is None:
        return None
    r = subprocess.run(["verilator", "--version"], capture_output=True, text=True)
    return r.stdout.strip() or None


def unavailable_reason() -> str | None:
    """Why :func:`build_gemm_core` cannot work on this machine, or None if it can."""
    if verilator_version() is None:
        return "verilator is not installed (apt-get install verilator)"
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        return "no C++ compiler (g++ or $CXX)"
    try:
        source_dir()
    except RtlUnavailable as e:
        return str(e)
    return None


def core_parameters(config: AccelConfig) -> dict[str, int]:
    """The Verilog parameters of ``gemm_core`` for a configuration (PIPE = the cycle model's
    ``gemm_pipeline_cycles``; the core needs at least 2 stages)."""
    if config.gemm_pipeline_cycles < 2:
        raise RtlUnavailable(f"gemm_pipeline_cycles={config.gemm_pipeline_cycles}: the RTL core "
                             "has at least 2 pipeline stages (input register, accumulate)")
    return {"BATCH": config.batch, "BLOCK_IN": config.block_in, "BLOCK_OUT": config.block_out,
            "PIPE": config.gemm_pipeline_cycles}


def _key(params: dict[str, int]) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        with open(_source_path(name), "rb") as f:
            h.update(name.encode() + f.read())
    h.update(repr(sorted(params.items())).encode())
    h.update((verilator_version() or "").encode())
    return h.hexdigest()[:16]


def build_gemm_core(config: AccelConfig | None = None, *, verbose: bool = False) -> str:
    """Verilate the GEMM core for ``config`` and build the co-simulation library; return its path.

    Cached: a second call with the same sources and parameters returns at once. The build runs
    serially (one compiler process) and takes about 10-15 s per configuration.

    Raises
    ------
    RtlUnavailable
        No verilator or compiler, or a pipeline depth the core cannot have.
    """
    config = config or AccelConfig.load()
    reason = unavailable_reason()
    if reason:
        raise RtlUnavailable(f"cannot build the RTL GEMM core: {reason}")
    params = core_parameters(config)
    out_dir = os.path.join(knobs.cache_dir(), f"gemm-rtl-{_key(params)}")
    lib = os.path.join(out_dir, LIB_NAME)
    if os.path.exists(lib):
        return lib
    os.makedirs(knobs.cache_dir(), exist_ok=True)
    print(f"tvm_qnn.bitserial_accel.rtl: verilating gemm_core {params} into {out_dir}",
          file=sys.stderr)
    # Build in a private folder and rename it into place, so concurrent builds cannot see a
    # half-written library.
    work = tempfile.mkdtemp(prefix="gemm-rtl-build-", dir=knobs.cache_dir())
    try:
        obj = os.path.join(work, "obj")
        cmd = ["verilator", "--cc", _source_path("gemm_core.v"), "--top-module", "gemm_core",
               "--prefix", "Vgemm_core", "--Mdir", obj, "-O3", "--x-assign", "fast",
               "--x-initial", "fast", "--noassert", "-Wno-fatal"]
        cmd += [f"-G{k}={v}" for k, v in params.items()]
        _run(cmd, verbose)
        root = subprocess.run(["verilator", "--getenv", "VERILATOR_ROOT"], capture_output=True,
                              text=True, check=True).stdout.strip()
        include = os.path.join(root, "include")
        # One compiler call: the model's classes and the runtime files its makefile lists.
        sources = sorted(os.path.join(obj, f) for f in os.listdir(obj) if f.endswith(".cpp"))
        sources += [os.path.join(include, f"{g}.cpp") for g in _runtime_files(obj)]
        _run([os.environ.get("CXX", "g++"), "-shared", "-fPIC", "-O2", "-std=c++17",
              *[f"-DGEMM_{k}={v}" for k, v in params.items()],
              "-I", obj, "-I", os.path.dirname(_source_path("gemm_rtl.h")),
              "-I", include, "-I", os.path.join(include, "vltstd"),
              _source_path("gemm_core_capi.cc"), *sources, "-pthread", "-o",
              os.path.join(work, LIB_NAME)], verbose)
        os.makedirs(out_dir, exist_ok=True)
        os.replace(os.path.join(work, LIB_NAME), lib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lib


def _runtime_files(obj: str) -> list[str]:
    """The verilator runtime sources (``verilated``, ``verilated_threads``, ...) the model needs,
    from the ``VM_GLOBAL_*`` lists of the generated makefile."""
    names, collecting = [], False
    with open(os.path.join(obj, "Vgemm_core_classes.mk")) as f:
        for line in f:
            if line.startswith("VM_GLOBAL_"):
                collecting = True
                continue
            if collecting:
                name = line.strip().rstrip("\\").strip()
                if not name:
                    collecting = False
                else:
                    names.append(name)
    return names or ["verilated"]


def _run(cmd: list[str], verbose: bool) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if verbose or r.returncode:
        print(r.stdout[-4000:] + r.stderr[-4000:], file=sys.stderr)
    if r.returncode:
        raise RtlUnavailable(f"building the RTL GEMM core failed ({cmd[0]} exited with "
                             f"{r.returncode}); see the output above")
