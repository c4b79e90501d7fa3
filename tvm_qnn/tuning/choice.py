# SPDX-License-Identifier: Apache-2.0
"""Which record of a kernel ``compile`` uses: a tuned one only where it clearly beats the
default template.

Tuning measures the default template first and times the best records again in turn with it
(:mod:`.retime`), so both times are in the database. Ranking by time alone lets a record that
won by the noise replace the default: on a shared Zen 4, the same int8-dot records timed
0.94-1.06x the default in two runs, and 0.86x once. So a record serves a kernel only when it
is at least :data:`MIN_GAIN` faster than the default template's record; otherwise the default
template does. A database without the default's record (records committed by hand, tuned
before it was measured) ranks by time alone.

:func:`kept_records` is what :func:`keep_best` keeps, so that a pruned database
makes the same choice.
"""

from __future__ import annotations

import os

from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from ..target import resolve_target
from ..topi.attrs import KERNEL_ATTR
from .database import is_measured, mean_seconds, open_database, replace_records

#: How much faster than the default template's record a tuned record must be to replace it:
#: above the 6 % spread of the same kernels' re-timed ratios over runs on a shared host.
MIN_GAIN = 0.07


def default_schedule(qnn_target, kind: str, mod) -> s_tir.Schedule | None:
    """The default template of ``kind`` applied to the workload ``mod`` (what
    :func:`~.retime.measure_default` records), or None for a target without one."""
    template = getattr(qnn_target, "template", None)
    if template is None:
        return None
    sch = s_tir.Schedule(mod)
    template(kind)(sch)
    return sch


def default_trace(qnn_target, kind: str, mod) -> str | None:
    """The trace of :func:`default_schedule`, or None."""
    sch = default_schedule(qnn_target, kind, mod)
    return None if sch is None else str(sch.trace)


def _parallel_loops(trace: str) -> int:
    return trace.count("sch.parallel(")


def chosen_record(records: list, default: str | None):
    """The record to use of ``records`` (measured, fastest first; ``default`` the default
    template's trace): the fastest, unless the default template's record is within
    :data:`MIN_GAIN` of it, then that one. None for no records.

    Records that parallelize fewer loops than ``default`` were made for fewer threads (code
    for several parallelizes smaller layers, :meth:`~tvm_qnn.target.cpu.CpuTarget.for_threads`)
    and do not count: measured, the shipped CNV_2W2A records ran 0.219 ms on 2 threads of a
    Zen 4, the default template for 2 threads 0.137 ms."""
    if default is not None:
        records = [r for r in records
                   if _parallel_loops(str(r.trace)) >= _parallel_loops(default)]
    if not records:
        return None
    best = records[0]
    mine = next((r for r in records if is_default(r, default)), None)
    return mine if mine is not None and _default_wins(best, mine) else best


def _default_wins(best, default_record) -> bool:
    """True when the fastest record does not beat the default's by :data:`MIN_GAIN`."""
    return mean_seconds(best) > mean_seconds(default_record) * (1 - MIN_GAIN)


def is_default(record, default: str | None) -> bool:
    """True when ``record`` is the default template's."""
    return default is not None and str(record.trace) == default


def kept_records(records: list, default: str | None) -> list:
    """What a pruned database keeps of ``records`` (measured, fastest first) so that
    :func:`chosen_record` chooses as before: the fastest, and the default template's record
    where it wins. Where no record has the ``default`` trace (None; or a template for other
    threads than the records were tuned for), every record it might choose
    (:func:`near_best`)."""
    mine = next((r for r in records if is_default(r, default)), None)
    if mine is None:
        return near_best(records)
    first = records[0]
    return [first] + ([mine] if _default_wins(first, mine) and not mine.same_as(first) else [])


def near_best(records: list) -> list:
    """Of ``records`` (measured, fastest first), the ones :func:`chosen_record` may pick
    whatever the default template is: those within :data:`MIN_GAIN` of the fastest."""
    if not records:
        return []
    bound = mean_seconds(records[0]) / (1 - MIN_GAIN)
    return [r for r in records if mean_seconds(r) <= bound]


def keep_best(db_dir: str | os.PathLike, target=None) -> tuple[int, int]:
    """Keep only the records ``compile`` may use of each layer kernel in the database
    ``db_dir``: the fastest, and the default template's where no record beats it by
    :data:`~.choice.MIN_GAIN`. Without ``target`` (the one tuned for, which knows the default
    template), every record within that margin of the fastest is kept instead.

    For a database to ship in ``schedules/``: loading costs about 1.4 ms per record (measured:
    529 records, 0.72 s on every compile). The files are replaced atomically. Tuning the folder
    again starts those layers over (from the records kept). Returns (records before, records
    after).
    """
    qnn_target = None if target is None else resolve_target(target)
    db = open_database(db_dir)
    records = db.get_all_tuning_records()
    by_workload: dict[str, list] = {}
    for rec in records:
        if is_measured(rec):
            by_workload.setdefault(str(rec.workload.as_json()[0]), []).append(rec)

    def fill(new: ms.database.Database) -> None:
        for recs in by_workload.values():
            mod = recs[0].workload.mod
            attrs = mod["main"].attrs
            kind = None if attrs is None else attrs.get(KERNEL_ATTR)
            default = None if qnn_target is None or kind is None else default_trace(
                qnn_target, str(kind), mod)
            for rec in kept_records(sorted(recs, key=mean_seconds), default):
                new.commit_tuning_record(ms.database.TuningRecord(
                    rec.trace, new.commit_workload(rec.workload.mod), rec.run_secs,
                    rec.target, rec.args_info))

    replace_records(db_dir, fill)
    return len(records), len(open_database(db_dir).get_all_tuning_records())


__all__ = ["MIN_GAIN", "chosen_record", "default_schedule", "default_trace", "is_default",
           "keep_best", "kept_records", "near_best"]
