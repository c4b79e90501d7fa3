# SPDX-License-Identifier: Apache-2.0
"""Writing a compiled module as a shared library, with a full disk an error, not a crash.

TVM's ``export_library`` has LLVM write each module's object file (and one of the packed
imports: the VM executable, weights included) into a scratch folder, then links them. LLVM
cannot report a failed write: on a full disk it ends the process (``LLVM ERROR: IO failure on
output stream: No space left on device``, exit 1). So the objects are written beside the
library (:func:`~tvm_qnn.runtime.atomic.scratch_dir`: one disk, the one the user chose), and
that disk is checked first for room for them, bounded by their LLVM IR text (measured on the
test models and CNV: the objects are 0.2-0.35 of it). The linker and the tar writer report
their errors: those become a :class:`~tvm_qnn.errors.LibraryFileError` too.

What this cannot see: a disk filled by another process between the check and the write, and
quotas (``statvfs`` does not count them).
"""

from __future__ import annotations

import shutil

from ..errors import LibraryFileError
from .atomic import published_path, scratch_dir


def runtime_module(module):
    """The runtime Module of ``module``: a Relax Executable's, or ``module`` itself.

    Not ``getattr(module, "mod", module)``: on a Module that is a function lookup, which
    fails for code of another architecture (aarch64 kernels built on x86)."""
    from tvm.runtime import Executable

    return module.mod if isinstance(module, Executable) else module


def object_bytes_bound(module) -> int:
    """An upper bound of the bytes LLVM writes when ``module`` (a runtime Module or a Relax
    ``Executable``) is exported: the length of the
    LLVM IR text of each object it writes (TVM's ``export_library``: one per LLVM module, and
    one of the packed imports when the module has imports)."""
    from tvm.runtime import _ffi_api

    module = runtime_module(module)  # a Relax Executable exports its runtime Module
    llvm = [m for m in module._collect_dso_modules() if m.kind == "llvm"]
    bound = sum(len(m.inspect_source("ll")) for m in llvm)
    if module.imports and llvm:
        target = llvm[0].get_function("_get_target_string")()
        packed = _ffi_api.ModulePackImportsToLLVM(module, False, target, "")
        bound += len(packed.inspect_source("ll"))
    return bound


def _problem(err: Exception) -> str:
    """The lines of a linker error that say what went wrong (not the command line)."""
    lines = [line.strip() for line in str(err).splitlines()]
    lines = [line for line in lines
             if line and not line.startswith(("Compilation error", "Command line"))]
    return "; ".join(lines[:3]) or type(err).__name__


def write_library(module, path: str, fcompile=None) -> None:
    """``module.export_library(path, fcompile=fcompile)``, its objects in a scratch folder
    beside ``path`` whose disk has room for them; raises a
    :class:`~tvm_qnn.errors.LibraryFileError` when it has not (nothing is written then), or
    when the linker fails. An OSError of the scratch folder passes through."""
    needed = object_bytes_bound(module)
    shown = published_path(path)  # the user's name, not the temporary one being written
    with scratch_dir(path) as workspace:
        free = shutil.disk_usage(workspace).free
        if free < needed:
            raise LibraryFileError(
                f"cannot write {shown}: {free >> 10} KiB free on its disk, and exporting needs "
                f"up to {needed >> 10} KiB there for its object files (LLVM ends the process "
                "on a full disk, so it is not tried). Free some space, or export elsewhere.")
        try:
            module.export_library(path, fcompile=fcompile, workspace_dir=workspace)
        except RuntimeError as err:  # the linker's (or TVM's) error, untyped
            raise LibraryFileError(f"cannot write {shown}: {_problem(err)}") from None


__all__ = ["object_bytes_bound", "runtime_module", "write_library"]
