# SPDX-License-Identifier: Apache-2.0
"""Which record compile uses: a tuned one only where it beats the default template's record by
MIN_GAIN, from a tuning database, a pruned one, or a pre-tuned folder."""

import logging

import numpy as np
import pytest
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

import tvm_qnn
from tvm_qnn.frontend import load_model
from tvm_qnn.pipeline import lower_for_tuning
from tvm_qnn.target import X86Target
from tvm_qnn.target.cpu import ScheduleConfig
from tvm_qnn.testing.onnx_models import make_conv_model, random_input
from tvm_qnn.tuning import extract_tasks, keep_best, open_database
from tvm_qnn.tuning.choice import MIN_GAIN, chosen_record, default_trace, kept_records, near_best

OTHER_TILE = ScheduleConfig(ow_tile=1, oh_tile=2)  # not the default's register tile


@pytest.fixture(scope="module")
def conv():
    return make_conv_model("qcdq", in_ch=16, out_ch=16, size=(12, 12), act_bits=2,
                           weight_bits=2)


@pytest.fixture(scope="module")
def task(conv):
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), X86Target()))
    return task


@pytest.fixture(scope="module")
def assemblies(conv, task):
    """The code compile emits with the default template and with the other tile's record."""
    import os

    old = os.environ.get("TVM_QNN_SCHEDULES")
    os.environ["TVM_QNN_SCHEDULES"] = "off"
    try:
        default = tvm_qnn.compile(conv, "x86").assembly()
        db = ms.database.MemoryDatabase()
        _commit(db, task, OTHER_TILE, 1e-3)
        other = tvm_qnn.compile(conv, "x86", tuning_db=db).assembly()
    finally:
        if old is None:
            del os.environ["TVM_QNN_SCHEDULES"]
        else:
            os.environ["TVM_QNN_SCHEDULES"] = old
    assert default != other
    return {"default": default, "other": other}


def _commit(db, task, config, secs):
    """A record of ``task`` scheduled with ``config`` (None: the default template)."""
    target = X86Target()
    sch = s_tir.Schedule(task.mod)
    (target if config is None else X86Target(schedule_config=config)).template(task.kind)(sch)
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(task.mod), [secs], target.tvm_target,
        ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))


@pytest.mark.parametrize("gain,used", [(MIN_GAIN / 2, "default"), (MIN_GAIN * 1.5, "other")])
def test_a_record_serves_only_where_it_beats_the_default_by_the_margin(
        conv, task, assemblies, gain, used, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("TVM_QNN_SCHEDULES", "off")
    db = open_database(tmp_path / "db", create=True)
    _commit(db, task, None, 1e-3)
    _commit(db, task, OTHER_TILE, 1e-3 * (1 - gain))
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        art = tvm_qnn.compile(conv, "x86", tuning_db=tmp_path / "db")
    assert art.assembly() == assemblies[used]
    if used == "default":
        assert f"default template (no tuned schedule beats it by {round(MIN_GAIN * 100)} %)" \
            in caplog.text
    else:
        assert "tuned schedule from the database" in caplog.text
    feeds = random_input(conv, seed=5)
    np.testing.assert_array_equal(art.run(feeds), tvm_qnn.compile(conv, "x86").run(feeds))
    # tune_report says what compile uses; a kept default is timed once, as both columns.
    (row,) = tvm_qnn.tune_report(conv, "x86", tmp_path / "db")
    assert row.kept_default == (used == "default") and row.trials == 2
    assert (row.best_ms == row.default_ms) == (used == "default")


def test_without_the_default_record_the_fastest_serves(task):
    """Records committed by hand or pruned before the rule: ranked by time alone."""
    db = ms.database.MemoryDatabase()
    _commit(db, task, OTHER_TILE, 2e-3)
    _commit(db, task, ScheduleConfig(ow_tile=3), 1e-3)
    records = db.get_top_k(db.commit_workload(task.mod), 10)
    default = default_trace(X86Target(), task.kind, task.mod)
    assert chosen_record(records, default).same_as(records[0])
    assert chosen_record([], default) is None
    _commit(db, task, None, 1e-3 / (1 - MIN_GAIN) * 0.999)
    records = db.get_top_k(db.commit_workload(task.mod), 10)
    assert str(chosen_record(records, default).trace) == default


@pytest.mark.parametrize("target,kept", [("x86", [0.98e-3, 1e-3]),
                                         (None, [0.98e-3, 0.99e-3, 1e-3])])
def test_keep_best_keeps_what_compile_may_choose(conv, task, assemblies, target, kept,
                                                 tmp_path, monkeypatch):
    """Pruning keeps the fastest record and the default template's when no record beats it
    by the margin (without the target, which knows the default: every record within the
    margin), so a pruned database chooses as the whole one did."""
    monkeypatch.setenv("TVM_QNN_SCHEDULES", "off")
    db = open_database(tmp_path / "db", create=True)
    _commit(db, task, None, 1e-3)
    _commit(db, task, OTHER_TILE, 0.98e-3)
    _commit(db, task, ScheduleConfig(ow_tile=3), 0.99e-3)
    _commit(db, task, ScheduleConfig(ow_tile=4), 5e-3)
    assert keep_best(tmp_path / "db", target) == (4, len(kept))
    records = open_database(tmp_path / "db").get_all_tuning_records()
    assert sorted(float(r.run_secs[0]) for r in records) == kept
    assert near_best(sorted(records, key=lambda r: float(r.run_secs[0]))) == sorted(
        records, key=lambda r: float(r.run_secs[0]))
    assert tvm_qnn.compile(conv, "x86", tuning_db=tmp_path / "db").assembly() \
        == assemblies["default"]


def test_retiming_a_pruned_database_restores_the_default_record(task, tmp_path):
    from tvm_qnn.tuning.retime import retime_best

    target = X86Target()
    db = open_database(tmp_path / "db", create=True)
    _commit(db, task, OTHER_TILE, 1e-3)
    retime_best([task], target, str(tmp_path / "db"))
    records = open_database(tmp_path / "db").get_all_tuning_records()
    default = default_trace(target, task.kind, task.mod)
    assert sorted(str(r.trace) == default for r in records) == [False, True]
    assert all(len(r.run_secs) == 1 and 1e-7 < float(r.run_secs[0]) < 1e-3 for r in records)


def test_pretuned_records_follow_the_same_rule(conv, task, assemblies, tmp_path, monkeypatch,
                                               caplog):
    class_key = X86Target().schedule_keys()[1][0]
    db = open_database(tmp_path / class_key, create=True)
    _commit(db, task, None, 1e-3)
    _commit(db, task, OTHER_TILE, 0.97e-3)
    monkeypatch.setenv("TVM_QNN_SCHEDULES", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        art = tvm_qnn.compile(conv, "x86")
    assert "default template (no pre-tuned schedule beats it by" in caplog.text
    assert art.assembly() == assemblies["default"]


def test_records_for_fewer_threads_do_not_serve_code_for_more(task):
    """A record that parallelizes fewer loops than the default template for these threads was
    tuned for fewer: it does not count (the default template serves)."""
    target = X86Target()
    serial = X86Target(schedule_config=ScheduleConfig(parallel=False))
    db = ms.database.MemoryDatabase()
    sch = s_tir.Schedule(task.mod)
    serial.template(task.kind)(sch)
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(task.mod), [1e-9], target.tvm_target,
        ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))
    records = db.get_top_k(db.commit_workload(task.mod), 10)
    many = default_trace(X86Target(schedule_config=ScheduleConfig(min_parallel_popcounts=1)),
                         task.kind, task.mod)
    assert "sch.parallel(" in many and "sch.parallel(" not in str(records[0].trace)
    assert chosen_record(records, many) is None
    assert chosen_record(records, default_trace(serial, task.kind, task.mod)) is not None


def test_code_for_two_threads_runs_smaller_layers_parallel_and_is_exact():
    """compile(threads=2) parallelizes layers that code for one thread keeps serial; outputs
    are the same. (Whether a shipped record gives way there depends on what the folder holds:
    the next test makes that case.)"""
    import os

    path = os.path.join(os.path.dirname(tvm_qnn.__file__), "models", "CNV_2W2A.onnx")
    one = tvm_qnn.compile(path, "x86", threads=1)
    two = tvm_qnn.compile(path, "x86", threads=2)
    launches = [art.assembly().count("TVMBackendParallelLaunch") for art in (one, two)]
    assert launches[1] > launches[0], launches
    x = np.random.default_rng(6).random((4, 1, 1, 28, 28), dtype=np.float32)
    for xi in x:
        np.testing.assert_array_equal(two.run(xi, threads=2), one.run(xi, threads=1))


def test_a_record_tuned_for_fewer_threads_gives_way_in_compile(conv, task, caplog,
                                                               monkeypatch):
    """A serial record, far faster than anything else, for a layer that code for these
    threads parallelizes: compile says so and builds the default template (parallel)."""
    monkeypatch.setenv("TVM_QNN_SCHEDULES", "off")
    db = ms.database.MemoryDatabase()
    _commit(db, task, ScheduleConfig(parallel=False), 1e-6)
    parallel = X86Target(schedule_config=ScheduleConfig(min_parallel_popcounts=1))
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        art = tvm_qnn.compile(conv, parallel, tuning_db=db)
    assert "tuned for fewer threads" in caplog.text
    assert "TVMBackendParallelLaunch" in art.assembly()


def test_pruning_for_other_threads_keeps_what_a_compile_may_choose(task):
    """keep_best run where code parallelizes more than the records do (another thread count
    than the tuning's): nothing matches the default template's trace there, so every record
    within the margin is kept (it used to fail on the record the thread rule leaves none of)."""
    serial = X86Target(schedule_config=ScheduleConfig(parallel=False))
    db = ms.database.MemoryDatabase()
    for config, secs in [(ScheduleConfig(parallel=False), 1e-3),
                         (ScheduleConfig(parallel=False, ow_tile=1, oh_tile=2), 0.98e-3),
                         (ScheduleConfig(parallel=False, ow_tile=3), 5e-3)]:
        _commit(db, task, config, secs)
    records = list(db.get_top_k(db.commit_workload(task.mod), 10))
    many = default_trace(X86Target(schedule_config=ScheduleConfig(min_parallel_popcounts=1)),
                         task.kind, task.mod)
    assert chosen_record(records, many) is None
    assert [float(r.run_secs[0]) for r in kept_records(records, many)] == [0.98e-3, 1e-3]
    # With the trace the records were tuned with, the default's record is found and kept.
    same = default_trace(serial, task.kind, task.mod)
    assert [float(r.run_secs[0]) for r in kept_records(records, same)] == [0.98e-3, 1e-3]
