# SPDX-License-Identifier: Apache-2.0
"""Check a MetaSchedule JSON database before TVM reads it; set aside the lines it cannot take.

MetaSchedule's ``JSONDatabase`` trusts its files: a record line that is JSON but not a list
(``{"a": 1}``, ``null``) makes it dereference a null pointer (SIGSEGV, TVM 0.27), and any
other malformed line aborts the whole load. Its format, one JSON value per line:

* ``database_workload.json``: ``["<structural hash>", "<base64 of the module>"]``; records
  name their workload by its line number there (from 0).
* ``database_tuning_record.json``: ``[workload_index, [trace, run_secs, target, args_info]]``
  with ``trace`` = ``[instructions, decisions]``, each instruction ``[name, inputs, attrs,
  outputs]`` and each decision ``[instruction_index, value]``; ``run_secs`` a list of numbers,
  ``target`` a dict and ``args_info`` a list of lists, each of the three or null.

:func:`repair` moves every line that breaks this (or is not UTF-8 JSON: a write cut short,
random bytes) to a side file ``<name>.corrupt`` (``.corrupt.1``, ... when that exists: side
files are never overwritten), with a warning naming the file and lines. When MetaSchedule
still cannot load the folder, ``repair(..., replay=True)`` also sets aside the records whose
trace no longer replays on its workload (MetaSchedule replays them all as it loads, and one
that fails aborts the load): schedules tuned for kernels that have changed since. Records of a
workload line that was set aside go with it; the later workloads move up a line, so their records
are renumbered. Writers of the folder serialize on :func:`locked`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os

from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError

logger = logging.getLogger("tvm_qnn")
WORKLOADS_FILE = "database_workload.json"
RECORDS_FILE = "database_tuning_record.json"
LOCK_FILE = "database.lock"


@contextlib.contextmanager
def locked(work_dir: str):
    """Hold an exclusive advisory lock (``flock`` of ``work_dir/database.lock``) while inside.

    Everything in tvm_qnn that appends a workload to, or rewrites, a database takes it, so a
    process reads the workload table and appends to it without another one appending between:
    a workload's index is its line number. Raises OSError when the lock file cannot be made.
    """
    fd = os.open(os.path.join(work_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lines(path: str) -> list[bytes]:
    """The lines of ``path`` as MetaSchedule reads them (split at ``\\n``), as bytes."""
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse(line: bytes):
    """The JSON value of a line; ValueError (UnicodeDecodeError is one) when it has none."""
    return json.loads(line.decode("utf-8"), parse_constant=_no_constant)


def _workload_problem(value) -> str | None:
    """Why MetaSchedule cannot read ``value`` as a workload, or None."""
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, str) for v in value)):
        return "not a [hash, module] pair of strings"
    try:
        base64.b64decode(value[1], validate=True)
    except (binascii.Error, ValueError):
        return "its module is not base64 (cut short?)"
    try:  # the schema holds, so TVM raises (it does not crash) on what is left to check
        ms.database.Workload.from_json(value)
    except Exception as err:  # noqa: BLE001 - TVM's parse errors are of several types
        return f"its module does not load ({str(err).splitlines()[0][:80]})"
    return None


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _lists(x, size: int | None = None) -> bool:
    return isinstance(x, list) and all(
        isinstance(v, list) and (size is None or len(v) == size) for v in x)


def _record_problem(value, n_workloads: int) -> str | None:
    """Why MetaSchedule cannot read ``value`` as a tuning record, or None."""
    if not (isinstance(value, list) and len(value) == 2):
        return "not a [workload_index, record] pair"
    index, record = value
    if type(index) is not int:  # noqa: E721 - a bool is an int to Python, not to TVM
        return "its workload index is not an integer"
    if not 0 <= index < n_workloads:
        return f"workload index {index} is not a line of {WORKLOADS_FILE} ({n_workloads} lines)"
    if not (isinstance(record, list) and len(record) == 4):
        return "its record is not [trace, run_secs, target, args_info]"
    trace, secs, target, args = record
    if not (isinstance(trace, list) and len(trace) == 2 and _lists(trace[0], 4)
            and _lists(trace[1], 2)
            and all(isinstance(inst[0], str) for inst in trace[0])
            and all(type(d[0]) is int for d in trace[1])):  # noqa: E721
        return "its trace is not [instructions, decisions]"
    if secs is not None and not (isinstance(secs, list) and all(map(_is_number, secs))):
        return "its run_secs is not a list of numbers"
    if target is not None and not isinstance(target, dict):
        return "its target is not a dict"
    if args is not None and not _lists(args):
        return "its args_info is not a list of lists"
    return None


def _check(lines: list[bytes], problem) -> list[tuple[object, str | None]]:
    """(value, problem) of each line."""
    out = []
    for line in lines:
        try:
            value = _parse(line)
        except ValueError:
            out.append((None, "not UTF-8 JSON (a write cut short?)"))
            continue
        out.append((value, problem(value)))
    return out


def _replay_problem(value, workloads: list) -> str | None:
    """Why a well-formed record's trace does not apply to its workload (a schedule tuned by
    another version of the kernels, e.g. one naming a tensor intrinsic whose operands have
    changed since), or None. MetaSchedule replays every trace as it loads a database, and
    one that fails makes the whole load fail."""
    try:
        ms.database.TuningRecord.from_json(value[1], workloads[value[0]])
    except Exception as err:  # noqa: BLE001 - TVM raises several types
        lines = str(err).strip().splitlines()
        why = next((ln for ln in reversed(lines) if "not rendered" not in ln), "")
        return ("its schedule no longer applies to the kernel (tuned by another tvm_qnn "
                f"version?){': ' + why[:120] if why else ''}; the layer gets the default")
    return None


def _plan(work_dir: str, replay: bool = False):
    """The repaired (workload lines, record lines) and the bad lines of each file as
    (path, [(line number, line, why)]), or None when nothing is to repair. ``replay``: also
    set aside the records whose trace does not replay (:func:`_replay_problem`; slower)."""
    wpath, rpath = os.path.join(work_dir, WORKLOADS_FILE), os.path.join(work_dir, RECORDS_FILE)
    wlines, rlines = _lines(wpath), _lines(rpath)
    wchecked = _check(wlines, _workload_problem)
    # A record names its workload by line: without the lines set aside, later ones move up.
    new_index, kept = [], 0
    for _, why in wchecked:
        new_index.append(None if why else kept)
        kept += why is None
    wbad = [(k + 1, line, why)
            for k, (line, (_, why)) in enumerate(zip(wlines, wchecked, strict=True)) if why]
    if wlines and not kept:
        raise TvmQnnError(
            f"tuning database {work_dir!r}: no workload in {WORKLOADS_FILE} can be read "
            f"(line {wbad[0][0]}: {wbad[0][2]}), so none of its records can be used. Move the "
            "folder away and tune again (or pass another tuning_db).")
    parsed = [ms.database.Workload.from_json(value) if why is None else None
              for value, why in wchecked] if replay else []
    records, rbad = [], []
    for k, (line, (value, why)) in enumerate(zip(rlines, _check(
            rlines, lambda v: _record_problem(v, len(wlines))), strict=True)):
        if why is None and new_index[value[0]] is None:
            why = f"its workload (line {value[0] + 1} of {WORKLOADS_FILE}) was set aside"
        if why is None and replay:
            why = _replay_problem(value, parsed)
        if why:
            rbad.append((k + 1, line, why))
        elif new_index[value[0]] != value[0]:
            records.append(json.dumps([new_index[value[0]], value[1]],
                                      separators=(",", ":")).encode())
        else:
            records.append(line)
    if not wbad and not rbad:
        return None
    workloads = [line for line, (_, why) in zip(wlines, wchecked, strict=True) if not why]
    return workloads, records, [(wpath, wbad), (rpath, rbad)]


def _side_file(path: str):
    """A new ``<path>.corrupt`` (numbered when taken), opened for writing; never overwrites."""
    for n in range(1000):
        side = path + (".corrupt" if n == 0 else f".corrupt.{n}")
        try:
            return side, open(side, "xb")  # noqa: SIM115 - closed by the caller
        except FileExistsError:
            continue
    raise OSError(f"{path}.corrupt.999 exists")


def _describe(bad) -> str:
    shown = "; ".join(f"line {n}: {why}" for n, _, why in bad[:3])
    return shown + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")


def _write(work_dir: str, plan) -> list[str]:
    """Write the side files, then replace the files by their repaired lines; the messages
    to log once everything is written."""
    workloads, records, bad = plan
    messages = []
    for path, lines in bad:
        if lines:
            side, f = _side_file(path)
            with f:
                f.write(b"".join(line + b"\n" for _, line, _ in lines))
            messages.append(f"{path}: set aside {len(lines)} line(s) MetaSchedule cannot read, "
                            f"kept in {side} ({_describe(lines)})")
    (wpath, wbad), (rpath, _) = bad
    # Records change when a workload line goes (those after it are renumbered).
    rewrite = [(rpath, records)] + ([(wpath, workloads)] if wbad else [])
    try:  # both files written before either is replaced: renumbered records need their table
        for path, lines in rewrite:
            with open(path + ".tmp", "wb") as f:
                f.write(b"".join(line + b"\n" for line in lines))
        for path, _ in rewrite:
            os.replace(path + ".tmp", path)
    finally:
        for path, _ in rewrite:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + ".tmp")
    return messages


def repair(work_dir: str, replay: bool = False) -> None:
    """Set aside the lines of ``work_dir``'s database MetaSchedule cannot read (see the
    module docstring), and with ``replay`` the records whose trace no longer applies to its
    workload (the tensor intrinsics the traces name must be registered); raise a
    :class:`TvmQnnError` when no workload is left or the folder cannot be written."""
    if _plan(work_dir, replay) is None:  # the common case: nothing to write, no lock file
        return
    try:
        with locked(work_dir):
            plan = _plan(work_dir, replay)  # again: another process may have repaired it
            if plan is None:
                return
            messages = _write(work_dir, plan)
    except OSError as err:
        plan = _plan(work_dir, replay)
        what = "; ".join(f"{path}: {_describe(lines)}" for path, lines in plan[2] if lines) \
            if plan else "lines MetaSchedule cannot read"
        raise TvmQnnError(f"tuning database {work_dir!r} has {what}, and they cannot be set "
                          f"aside: {err.strerror or err}. Copy the folder somewhere writable "
                          "and use the copy.") from None
    for message in messages:
        logger.warning(message)


__all__ = ["LOCK_FILE", "RECORDS_FILE", "WORKLOADS_FILE", "locked", "repair"]
