# SPDX-License-Identifier: Apache-2.0
"""An exported library and its description: ``model.so`` and ``model.so.json``.

The description holds what the library cannot say about itself (inputs, target, layer report,
threads) and the size and SHA-256 of the library it was written with: a pair torn by a crash
between the two renames, a truncated or a replaced library is refused before ``dlopen`` (which
may crash the process on a truncated file) ever sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

from ..errors import LibraryFileError

#: What ``tvm.runtime.load_module`` can load: a shared library, or a tar of objects it links.
LIBRARY_SUFFIXES = (".so", ".tar")


def check_library_path(path: str, writing: bool = False) -> None:
    """Refuse a library path export and load cannot both use, naming why."""
    if os.path.isdir(path):
        raise LibraryFileError(f"library path {path!r} is a directory; give a file name in it")
    if not path.endswith(LIBRARY_SUFFIXES):
        raise LibraryFileError(f"library path {path!r}: the file name must end in "
                               f"{' or '.join(LIBRARY_SUFFIXES)} (the loader picks the format "
                               "by it)")
    folder = os.path.dirname(os.path.abspath(path))
    if writing and not os.path.isdir(folder):
        raise LibraryFileError(f"cannot write {path!r}: the folder {folder!r} does not exist")


def library_digest(path: str) -> dict:
    """``{"bytes": size, "sha256": hex}`` of a library file, as its description records it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def _elf_is_whole(path: str) -> bool:
    """For libraries described without a digest: the ELF section header table (at the end of
    the file) is within the file; a truncated library fails this."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) < 52 or head[:4] != b"\x7fELF":
        return False
    endian = "<" if head[5] == 1 else ">"
    if head[4] == 2:  # ELFCLASS64
        (shoff,) = struct.unpack_from(endian + "Q", head, 0x28)
        shentsize, shnum = struct.unpack_from(endian + "HH", head, 0x3A)
    else:
        (shoff,) = struct.unpack_from(endian + "I", head, 0x20)
        shentsize, shnum = struct.unpack_from(endian + "HH", head, 0x2E)
    return shoff + shentsize * shnum <= size


def check_library(path: str, meta_path: str, recorded: dict | None) -> None:
    """Refuse a library that is not the one its description was written with."""
    if recorded is None:
        if path.endswith(".so") and not _elf_is_whole(path):
            raise LibraryFileError(f"{path}: not a whole shared library (truncated?); export "
                                   "it again")
        return
    size = os.path.getsize(path)
    if size != recorded["bytes"]:
        raise LibraryFileError(f"{path} has {size} bytes; {meta_path} describes a library of "
                               f"{recorded['bytes']} bytes: truncated, or not the library "
                               "exported with it. Export it again.")
    if library_digest(path)["sha256"] != recorded["sha256"]:
        raise LibraryFileError(f"{path} is not the library {meta_path} was written with (its "
                               "SHA-256 differs): export both again")


def read_description(path: str) -> dict:
    """The description next to the library ``path``, checked for the keys ``load`` uses and
    against the library file itself."""
    check_library_path(path)
    if not os.path.isfile(path):
        raise LibraryFileError(f"no compiled model at {path}")
    meta_path = path + ".json"
    if not os.path.exists(meta_path):
        raise LibraryFileError(f"{meta_path} is missing: it holds the input description "
                               "written next to the library by export_library")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
        for i in meta["inputs"]:
            if not (isinstance(i["name"], str) and isinstance(i["dtype"], str)
                    and all(isinstance(d, int) for d in i["shape"])):
                raise ValueError(f"bad input entry {i!r}")
        if not isinstance(meta["target"], str) or not isinstance(meta["layers"], list):
            raise ValueError("bad 'target' or 'layers'")
        recorded = meta.get("library")
        if recorded is not None:
            recorded = {"bytes": int(recorded["bytes"]), "sha256": str(recorded["sha256"])}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise LibraryFileError(f"{meta_path}: not a description of a tvm_qnn library "
                               f"({detail}); export the model again") from None
    check_library(path, meta_path, recorded)
    return meta


__all__ = ["LIBRARY_SUFFIXES", "check_library", "check_library_path", "library_digest",
           "read_description"]
