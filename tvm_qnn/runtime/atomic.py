# SPDX-License-Identifier: Apache-2.0
"""Publishing a set of files: all written under temporary names first, then renamed into place.

A reader never sees a half-written file, and a writer that fails part-way replaces nothing.
Temporary files are named ``.tmp-tvm_qnn-<pid>-<random>-<name>`` beside their target: the
next writer of the same target removes the ones whose process is gone (a ``kill -9``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil

_PREFIX = ".tmp-tvm_qnn-"
_TEMP_NAME = re.compile(re.escape(_PREFIX) + r"(\d+)-[0-9a-f]{8}-(.+)\Z")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly visible to other threads)
    os.umask(mask)
    return mask


def file_mode(executable: bool = False) -> int:
    """The mode ``open`` (0o666) or a linker (0o777, ``executable``) gives a new file under
    the umask; temporary files are created 0o600 and get this before they are published."""
    return (0o777 if executable else 0o666) & ~current_umask()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(path: str) -> list[str]:
    """Remove the temporary files a killed writer left for ``path``; returns their paths.

    Only names of this module's pattern, for this target name, whose writer process no longer
    runs: a concurrent writer's files are left alone. Scratch folders (:func:`scratch_dir`)
    go with their contents.
    """
    folder, name = os.path.split(os.path.abspath(path))
    removed = []
    for entry in os.listdir(folder):
        m = _TEMP_NAME.match(entry)
        if m and m.group(2) == name and not _alive(int(m.group(1))):
            stale = os.path.join(folder, entry)
            with contextlib.suppress(FileNotFoundError):  # another writer removed it first
                if os.path.isdir(stale) and not os.path.islink(stale):
                    shutil.rmtree(stale)
                else:
                    os.unlink(stale)
                removed.append(stale)
    return removed


def temp_name(path: str) -> str:
    """A temporary name beside ``path`` that ends in ``path``'s own name (TVM's exporter picks
    the linker by the suffix)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f"{_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")


def published_path(path: str) -> str:
    """The path a temporary name of :func:`temp_name` is published to; any other path as
    it is."""
    folder, name = os.path.split(os.fspath(path))
    m = _TEMP_NAME.match(name)
    return os.path.join(folder, m.group(2)) if m else os.fspath(path)


@contextlib.contextmanager
def scratch_dir(path: str):
    """A fresh folder beside ``path`` for the intermediate files of writing it (e.g. a
    library's object files): on ``path``'s disk, removed when the block ends, and by the next
    writer of ``path`` when a ``kill -9`` left it. For a temporary name of :func:`publish`,
    the folder is named for the path that name is published to (which its writer cleans)."""
    path = published_path(path)
    remove_stale_temps(path)
    scratch = temp_name(path)
    os.mkdir(scratch, 0o700)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def sync_file(path: str) -> None:
    """Flush ``path``'s data to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def publish():
    """Write several files, then put them all in place::

        with publish() as temp:
            write_library(temp("m.so", executable=True))
            write_json(temp("m.so.json"))

    ``temp(path, executable=False)`` removes what a killed writer left for ``path`` and returns
    a fresh temporary name beside it. When the block ends, each file gets the mode a plain
    write would give it under the umask (:func:`file_mode`), is flushed to disk, and is
    renamed onto its path, in the order asked. If the block raises, the temporary files are
    removed and no path is replaced. A crash between two renames leaves new and old files
    side by side: readers that need a matching set check it (``tvm_qnn.load`` does, by the
    library's size and hash recorded in its description).
    """
    temps: list[tuple[str, str, bool]] = []

    def temp(path: str, executable: bool = False) -> str:
        path = os.fspath(path)
        remove_stale_temps(path)
        tmp = temp_name(path)
        # Created here, exclusively: a name is never shared with another writer.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        temps.append((tmp, path, executable))
        return tmp

    try:
        yield temp
        for tmp, _, executable in temps:
            os.chmod(tmp, file_mode(executable))
            sync_file(tmp)
        for tmp, path, _ in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


__all__ = ["current_umask", "file_mode", "publish", "published_path", "remove_stale_temps",
           "scratch_dir", "sync_file", "temp_name"]
