# SPDX-License-Identifier: Apache-2.0
"""The processes a test left behind: every live descendant of this process."""

from __future__ import annotations

import os


def _proc_children() -> dict[int, list[int]]:
    """Parent pid → child pids of every live process, read from ``/proc``."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def descendants(pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of every live descendant of ``pid`` (default: this process);
    zombies (exited, not yet reaped) are not counted. Uses psutil when installed, else
    ``/proc``."""
    pid = os.getpid() if pid is None else pid
    try:
        import psutil
    except ImportError:
        tree, found, todo = _proc_children(), [], [pid]
        while todo:
            kids = tree.get(todo.pop(), [])
            found += kids
            todo += kids
        out = []
        for child in found:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    out.append((child, f.read().replace(b"\0", b" ").decode().strip()))
            except OSError:
                continue
        return out
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append((child.pid, " ".join(child.cmdline())))
        except psutil.NoSuchProcess:
            continue
    return out


__all__ = ["descendants"]
