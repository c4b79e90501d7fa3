# SPDX-License-Identifier: Apache-2.0
"""tvm_qnn.tune: tasks, the JSON database, resuming, and compile(tuning_db=...)."""

import logging
import shutil
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

import tvm_qnn
from tvm_qnn.frontend import load_model
from tvm_qnn.pipeline import lower_for_tuning
from tvm_qnn.target import X86Target
from tvm_qnn.target.cpu import ScheduleConfig
from tvm_qnn.testing.onnx_models import make_cnn_model, make_conv_model, random_input
from tvm_qnn.tuning import extract_tasks, keep_best, open_database
from tvm_qnn.tuning.families import read_kernel_families


@pytest.fixture(scope="module")
def conv():
    # 16 channels of 12x12: small enough to build fast, with several tile choices.
    return make_conv_model("qcdq", in_ch=16, out_ch=16, size=(12, 12), act_bits=2,
                           weight_bits=2)


def test_tasks_are_deduplicated_by_workload():
    model = make_cnn_model()
    tasks = extract_tasks(lower_for_tuning(load_model(model), X86Target()))
    assert [t.kind for t in tasks] == ["conv2d", "conv2d", "conv2d", "dense"]
    twice = make_conv_model("qdq", in_ch=8, out_ch=8)
    mod = lower_for_tuning(load_model(twice), X86Target())
    (task,) = extract_tasks(mod)
    assert task.layers and task.bits == "W2A8"


@pytest.mark.slow
def test_tune_records_and_resumes(conv, tmp_path):
    work = tmp_path / "db"
    db = tvm_qnn.tune(conv, "x86", trials=3, work_dir=work, seed=0)
    # The kernel as compile lowers it with the folder (its family chosen by the tuning).
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), X86Target(),
                                             families=read_kernel_families(work)))
    first = db.get_top_k(db.commit_workload(task.mod), 100)
    assert 1 <= len(first) <= 3  # the default template is measured first
    assert all(float(s) < 1 for r in first for s in r.run_secs)
    # The best record was timed again in this process (its fastest round; the runner keeps
    # 5 repeats).
    assert len(first[0].run_secs) == 1
    # Same budget again: nothing to do, nothing re-measured (the file is unchanged).
    records = (work / "database_tuning_record.json").read_text()
    db2 = tvm_qnn.tune(conv, "x86", trials=3, work_dir=work, seed=0)
    assert (work / "database_tuning_record.json").read_text() == records
    assert len(db2.get_top_k(db2.commit_workload(task.mod), 100)) == len(first)
    # The tuned model is still bit-exact.
    feeds = random_input(conv, seed=1)
    want = tvm_qnn.compile(conv, "x86").run(feeds)
    np.testing.assert_array_equal(tvm_qnn.compile(conv, "x86", tuning_db=work).run(feeds), want)
    rows = tvm_qnn.tune_report(conv, "x86", work)
    assert rows[0].trials == len(first) and rows[0].best_ms > 0 and rows[0].default_ms > 0


def test_database_record_changes_the_generated_code(conv, tmp_path, caplog):
    """A record with other tile decisions than the default must reach the compiled code."""
    target = X86Target()
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), target))
    other = X86Target(schedule_config=ScheduleConfig(ow_tile=1, oh_tile=2))
    sch = s_tir.Schedule(task.mod)
    other.template(task.kind)(sch)
    db = open_database(tmp_path / "db", create=True)
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(task.mod), [1e-6], target.tvm_target,
        ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))
    feeds = random_input(conv, seed=2)
    default = tvm_qnn.compile(conv, "x86")
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        tuned = tvm_qnn.compile(conv, "x86", tuning_db=tmp_path / "db")
    assert "tuned schedule from the database" in caplog.text
    assert tuned.assembly() != default.assembly()
    np.testing.assert_array_equal(tuned.run(feeds), default.run(feeds))


@pytest.mark.parametrize("family", ["bit-serial", "int8-dot"])
def test_every_point_of_the_search_space_is_exact(conv, family):
    """Schedules sampled from the tuning template (register tiles, unroll depth, both ways of
    packing the input of a bit-serial conv; the dot steps of an int8-dot one), after the
    search's postprocessing, compile through a database to the same outputs as the
    default."""
    host = X86Target()
    if family == "int8-dot" and host.dot_family is None:
        pytest.skip("this CPU has no dot-product step (AVX2)")
    target = X86Target(layout=replace(host.layout,
                                      dot8_min_branches=1 if family == "int8-dot" else None))
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), target))
    feeds = random_input(conv, seed=3)
    want = tvm_qnn.compile(conv, target).run(feeds)
    assert {row["kernel"] for row in tvm_qnn.compile(conv, target).layers} == {family}
    seen, variants = set(), set()
    for seed in range(1, 41):
        spaces = target.schedule_space(task.kind)(s_tir.Schedule(task.mod, seed=seed))
        # Bit-serial: the pack as scalar words and as column vectors; int8-dot packs no bits.
        assert len(spaces) == (2 if family == "bit-serial" else 1)
        for k, sch in enumerate(spaces):
            assert ms.postproc.RewriteParallelVectorizeUnroll().apply(sch)
            if str(sch.trace) in seen:
                continue
            seen.add(str(sch.trace))
            variants.add(k)
            db = ms.database.MemoryDatabase()
            db.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, db.commit_workload(task.mod), [1e-6], target.tvm_target,
                ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))
            np.testing.assert_array_equal(
                tvm_qnn.compile(conv, target, tuning_db=db).run(feeds), want)
        if len(seen) >= 6:
            break
    assert len(seen) >= 6 and variants == ({0, 1} if family == "bit-serial" else {0})


def test_best_records_are_timed_again_here(conv, tmp_path):
    """A record the runner timed impossibly fast (a lucky process) is timed again in-process
    and loses its place; the default template's record is timed here too."""
    from tvm_qnn.tuning.retime import retime_best

    target = X86Target()
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), target))
    db = open_database(tmp_path / "db", create=True)
    for tile, secs in [(None, 1e-3), (1, 1e-12), (3, 1e-3)]:  # default, "lucky", slow
        sch = s_tir.Schedule(task.mod)
        (target if tile is None
         else X86Target(schedule_config=ScheduleConfig(ow_tile=tile))).template(
            task.kind)(sch)
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(task.mod), [secs] * 5, target.tvm_target,
            ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))
    retime_best([task], target, str(tmp_path / "db"))
    records = open_database(tmp_path / "db").get_top_k(db.commit_workload(task.mod), 10)
    timed_here = [r for r in records if len(r.run_secs) == 1]  # the fastest of 3 rounds
    assert len(records) == 3 and len(timed_here) >= 2  # the default and the lucky one
    assert all(1e-7 < float(s) < 1e-3 for r in timed_here for s in r.run_secs)
    assert len(records[0].run_secs) == 1  # the best is one timed here


def test_kernels_compared_are_timed_in_turn_and_keep_their_fastest_sample():
    """A neighbour's load that comes and goes must fall on both kernels alike: each round
    times every kernel once, and each keeps its fastest round."""
    from tvm_qnn.tuning.retime import interleaved_min

    calls, load = [], iter([5.0, 0.0, 0.0, 5.0, 1.0, 1.0])  # seconds a neighbour adds

    def timer(name, own):
        def sample():
            calls.append(name)
            return own + next(load)
        return sample

    assert interleaved_min([timer("a", 2.0), timer("b", 1.0)], rounds=3) == [2.0, 1.0]
    assert calls == ["a", "b"] * 3


_KILLED_WHILE_RETIMING = """
import os, signal, sys
import tvm_qnn
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm_qnn.target import X86Target
from tvm_qnn.target.cpu import ScheduleConfig
from tvm_qnn.testing.onnx_models import make_conv_model
from tvm_qnn.tuning import retime
tune_module = sys.modules["tvm_qnn.tuning.tune"]  # the package's "tune" is the function


def search(pending, budgets, qnn_target, seed, work_dir, db, workers):
    # MetaSchedule's search (tested above) stands in as one candidate the runner timed lucky.
    (task,) = pending
    sch = s_tir.Schedule(task.mod)
    X86Target(schedule_config=ScheduleConfig(ow_tile=1)).template(task.kind)(sch)
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(task.mod), [1e-12] * 5, qnn_target.tvm_target,
        ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))


def killed(*args, **kwargs):  # kill -9 as re-timing starts
    os.kill(os.getpid(), signal.SIGKILL)


tune_module.search = search
retime.kernel_timer = killed
# 4 output channels: one kernel family on every x86 class (the int8-dot blocks are 8 or 16).
model = make_conv_model("qcdq", in_ch=8, out_ch=4, size=(6, 6), act_bits=2, weight_bits=2)
tvm_qnn.tune(model, "x86", trials=2, work_dir=sys.argv[1], seed=0)
"""


def test_a_retiming_killed_midway_is_done_by_the_next_tune(tmp_path):
    """A run killed while timing the best records again left the runner's times (a lucky
    1e-12 s here) as the best; the next run found every trial done, searched nothing and
    re-timed nothing, silently. The re-timing is marked before the search: the next run does
    it."""
    import subprocess
    import sys

    from tvm_qnn.tuning.retime import RETIME_FILE

    model = make_conv_model("qcdq", in_ch=8, out_ch=4, size=(6, 6), act_bits=2, weight_bits=2)
    target = X86Target()
    (task,) = extract_tasks(lower_for_tuning(load_model(model), target))
    work = tmp_path / "db"
    db = open_database(work, create=True)  # the default template, as the runner timed it
    sch = s_tir.Schedule(task.mod)
    target.template(task.kind)(sch)
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(task.mod), [1e-3] * 5, target.tvm_target,
        ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))
    killed = subprocess.run([sys.executable, "-c", _KILLED_WHILE_RETIMING, str(work)],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    runner_times = [len(r.run_secs) for r in open_database(work).get_all_tuning_records()]
    assert runner_times == [5, 5]  # the default template's and the lucky one's
    assert (work / RETIME_FILE).exists()
    db = tvm_qnn.tune(model, "x86", trials=2, work_dir=work, seed=0)
    records = db.get_all_tuning_records()
    assert [len(r.run_secs) for r in records] == [1, 1]  # both timed here
    assert all(float(s) > 1e-9 for r in records for s in r.run_secs)
    assert not (work / RETIME_FILE).exists()


def test_keep_best_leaves_the_fastest_record_of_each_kernel(conv, tmp_path):
    target = X86Target()
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), target))
    db = open_database(tmp_path / "db", create=True)
    for tile, secs in [(1, 3e-6), (2, 1e-6), (3, 2e-6)]:
        sch = s_tir.Schedule(task.mod)
        X86Target(schedule_config=ScheduleConfig(ow_tile=tile)).template(task.kind)(sch)
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(task.mod), [secs, secs], target.tvm_target,
            ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))
    assert keep_best(tmp_path / "db") == (3, 1)
    (kept,) = open_database(tmp_path / "db").get_all_tuning_records()
    assert [float(s) for s in kept.run_secs] == [1e-6, 1e-6]
    feeds = random_input(conv, seed=4)
    np.testing.assert_array_equal(tvm_qnn.compile(conv, "x86", tuning_db=tmp_path / "db")
                                  .run(feeds), tvm_qnn.compile(conv, "x86").run(feeds))


def test_missing_database_is_a_clear_error(conv, tmp_path):
    with pytest.raises(tvm_qnn.TvmQnnError, match="no such directory"):
        tvm_qnn.compile(conv, "x86", tuning_db=tmp_path / "nope")
    with pytest.raises(tvm_qnn.TvmQnnError, match="trials=0"):
        tvm_qnn.tune(conv, "x86", trials=0, work_dir=tmp_path / "db")


def test_a_file_as_the_work_dir_is_a_clear_error(tmp_path):
    """os.makedirs raised FileExistsError for it."""
    (tmp_path / "afile").write_text("")
    for create in (True, False):
        with pytest.raises(tvm_qnn.TvmQnnError, match="afile' is a file; it is a directory"):
            open_database(tmp_path / "afile", create=create)


def test_an_unreachable_tracker_is_an_error_before_tuning(conv, tmp_path):
    """Was: every candidate waited for its timeout (160 s), then tune returned as if done."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: no tracker there
    start = time.monotonic()
    with pytest.raises(tvm_qnn.TvmQnnError,
                       match=f"no TVM RPC tracker answers at 127.0.0.1:{port}"):
        tvm_qnn.tune(conv, "x86", trials=2, work_dir=tmp_path / "db",
                     runner=f"rasp4b@127.0.0.1:{port}", timeout=5)
    assert time.monotonic() - start < 15  # lowering the model, then the check
    assert not (tmp_path / "db").exists()


@derived_object
class _NoDevice(ms.runner.PyRunner):
    """A runner whose every candidate fails, as with a device that cannot run the code."""

    def run(self, runner_inputs):
        return [ms.runner.LocalRunnerFuture(None, "RuntimeError: the device is gone")
                for _ in runner_inputs]


def test_a_tune_that_measures_nothing_is_an_error(tmp_path):
    """Was: every candidate failed in turn, then tune returned (the CLI said "tuned", exit 0)
    with nothing measured. Now it stops at the default schedule, the first thing measured."""
    small = make_conv_model("qcdq", in_ch=8, out_ch=8, size=(6, 6), act_bits=2, weight_bits=2)
    with pytest.raises(tvm_qnn.TvmQnnError,
                       match=r"the runner could not measure even the default schedule "
                             r"\(RuntimeError: the device is gone\); tuning stopped"):
        tvm_qnn.tune(small, "x86", trials=4, work_dir=tmp_path / "db", runner=_NoDevice(),
                     seed=0)
    assert not open_database(tmp_path / "db").get_all_tuning_records()


@pytest.mark.slow
def test_rpc_runner_survives_a_dead_server_and_resumes(conv, tmp_path, caplog, monkeypatch):
    """Tuning through a TVM tracker on loopback; the server dies; a re-run finishes the job."""
    from tvm_qnn.runtime.rpc import RemoteDevice, RPCDevice
    from tvm_qnn.tuning.database import measured_records

    work = tmp_path / "db"
    with RPCDevice("qnn-tuning-test") as device:
        db = tvm_qnn.tune(conv, "x86", trials=2, work_dir=work, runner=device.remote, seed=0)
        # The kernel of the family tuning chose (the other may not have been searched).
        (task,) = extract_tasks(lower_for_tuning(load_model(conv), X86Target(),
                                                 families=read_kernel_families(work)))
        measured = len(measured_records(db, task.mod))
        assert measured >= 1
        # The board dies after tune checked the tracker has it (one already gone fails that
        # check); its candidates then fail one by one.
        check = RemoteDevice.check

        def dies_after_the_check(remote, *args, **kwargs):
            check(remote, *args, **kwargs)
            device.stop_server()

        monkeypatch.setattr(RemoteDevice, "check", dies_after_the_check)
        with caplog.at_level(logging.WARNING, logger="tvm_qnn"):
            db = tvm_qnn.tune(conv, "x86", trials=4, work_dir=work, runner=device.remote,
                              timeout=4, seed=1)
        monkeypatch.undo()
        assert "failed" in caplog.text  # reported, not fatal, and nothing counted as measured
        assert len(measured_records(db, task.mod)) == measured
        device.start_server()  # back: the re-run measures what is missing
        spec = f"qnn-tuning-test@127.0.0.1:{device.tracker_port}"
        db = tvm_qnn.tune(conv, "x86", trials=4, work_dir=work, runner=spec, seed=2)
        assert len(measured_records(db, task.mod)) > measured


def test_a_write_cut_short_loses_one_record_not_the_database(conv, tmp_path, caplog):
    work = tmp_path / "db"
    db = open_database(work, create=True)
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), X86Target()))
    args_info = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
    for tile in (1, 2, 3):
        sch = s_tir.Schedule(task.mod)
        X86Target(schedule_config=ScheduleConfig(ow_tile=tile)).template(task.kind)(sch)
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(task.mod), [1e-5 * tile], X86Target().tvm_target,
            args_info))
    records = work / "database_tuning_record.json"
    text = records.read_text()
    records.write_text(text[:-25])  # the process died while appending the last record
    with caplog.at_level(logging.WARNING, logger="tvm_qnn"):
        db = open_database(work)
    assert f"{records}: set aside 1 line(s)" in caplog.text
    assert len(db.get_all_tuning_records()) == 2
    last = text[:-25].splitlines()[-1]  # the cut-short line, kept aside
    assert (work / "database_tuning_record.json.corrupt").read_text() == last + "\n"


_FULL_DISK_RUN = """
import resource, signal, sys
import tvm_qnn
from tvm_qnn.testing.onnx_models import make_conv_model
# Writes past LIMIT bytes fail (EFBIG), as they would on a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[2])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
model = make_conv_model("qcdq", in_ch=16, out_ch=16, size=(12, 12), act_bits=2, weight_bits=2)
try:
    tvm_qnn.tune(model, "x86", trials=int(sys.argv[3]), work_dir=sys.argv[1], seed=0)
except tvm_qnn.TvmQnnError as err:
    print("ERROR", err)
    sys.exit(3)
"""


@pytest.mark.slow
def test_a_full_disk_stops_tuning_clearly_and_a_rerun_resumes(tmp_path):
    """MetaSchedule does not check its appends: without the check, a full disk would cut
    records short while tuning carried on. Here it stops with a clear error, keeps what was
    written, and a later run resumes from it."""
    import subprocess
    import sys

    work = tmp_path / "db"

    def run(limit, trials):
        return subprocess.run([sys.executable, "-c", _FULL_DISK_RUN, str(work), str(limit),
                               str(trials)], capture_output=True, text=True, timeout=600)

    first = run(0, 2)
    assert first.returncode == 0, first.stderr[-2000:]
    records = work / "database_tuning_record.json"
    kept = records.read_text()
    first_traces = {str(r.trace) for r in open_database(work).get_all_tuning_records()}
    full = run(len(kept.encode()) + 200, 8)  # room for part of one more record
    assert full.returncode == 3, full.stdout[-2000:] + full.stderr[-2000:]
    assert f"ERROR {work}: a tuning record could not be written" in full.stdout
    assert "is the disk full?" in full.stdout
    assert records.read_text().startswith(kept)  # what was written before is intact
    again = run(0, 4)
    assert again.returncode == 0, again.stderr[-2000:]
    db = open_database(work)
    # The cut-short line was dropped (kept as .corrupt); the first run's records survive (the
    # best ones re-timed) and the budget of 4 was filled up, not measured again from scratch
    # (for each kernel the conv has: one per kernel family where the CPU has two; a family
    # far slower than the other at its default is not searched and keeps what it had).
    assert first_traces <= {str(r.trace) for r in db.get_all_tuning_records()}
    per_kernel = Counter(str(r.workload.as_json()[0]) for r in db.get_all_tuning_records())
    assert max(per_kernel.values()) == 4 and all(n <= 4 for n in per_kernel.values()), \
        per_kernel


@pytest.mark.skipif(shutil.which("llvm-mca-19") is None or shutil.which("qemu-aarch64") is None
                    or shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="llvm-19 / qemu-user / gcc-aarch64-linux-gnu missing "
                           "(make sysdeps installs them)")
@pytest.mark.slow
def test_model_runner_tunes_a_board_we_do_not_have(conv, tmp_path):
    """arm_cpu tuning scores candidates with llvm-mca; the tuned code runs bit-exact (qemu)."""
    work = tmp_path / "rasp4b"
    db = tvm_qnn.tune(conv, "arm_cpu:rasp4b", trials=3, work_dir=work, seed=0)
    target = tvm_qnn.target.resolve_target("arm_cpu:rasp4b")
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), target))
    records = db.get_top_k(db.commit_workload(task.mod), 100)
    assert 1 <= len(records) <= 3
    assert all(0 < float(s) < 1 for r in records for s in r.run_secs)  # modelled seconds
    (row,) = tvm_qnn.tune_report(conv, "arm_cpu:rasp4b", work)
    assert 0 < row.best_ms <= row.default_ms * 1.0001  # the default template is a record
    feeds = random_input(conv, seed=2)
    want = tvm_qnn.compile(conv, "x86").run(feeds)
    art = tvm_qnn.compile(conv, "arm_cpu:rasp4b", tuning_db=work)
    np.testing.assert_array_equal(art.run(feeds), want)


def test_model_runner_is_for_arm_boards(conv, tmp_path):
    with pytest.raises(tvm_qnn.TvmQnnError,
                       match="runner='model' scores candidates with a model of the device"):
        tvm_qnn.tune(conv, "x86", trials=1, work_dir=tmp_path / "x", runner="model")


def test_pretuned_schedules_serve_layers_of_the_same_signature(conv, tmp_path, monkeypatch,
                                                               caplog):
    """TopHub-style lookup: a record in schedules/<device class>/ tuned on one model is
    replayed on another model's layer of the same shapes (other weights and scales)."""
    from tvm_qnn.tuning.pretuned import find_pretuned

    target = X86Target()
    (task,) = extract_tasks(lower_for_tuning(load_model(conv), target))
    other = X86Target(schedule_config=ScheduleConfig(ow_tile=1, oh_tile=2))
    sch = s_tir.Schedule(task.mod)
    other.template(task.kind)(sch)
    class_key = target.schedule_keys()[1][0]
    db = open_database(tmp_path / class_key, create=True)
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(task.mod), [1e-6], target.tvm_target,
        ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))
    monkeypatch.setenv("TVM_QNN_SCHEDULES", str(tmp_path))
    assert find_pretuned(target) == (str(tmp_path / class_key), class_key, "device class")
    # Same shapes and bits, other weights, scales and zero-point: another workload.
    sibling = make_conv_model("qcdq", in_ch=16, out_ch=16, size=(12, 12), act_bits=2,
                              weight_bits=2, seed=7)
    feeds = random_input(sibling, seed=3)
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        tuned = tvm_qnn.compile(sibling, "x86")
    assert f"pre-tuned schedules: {tmp_path / class_key} (device class {class_key})" \
        in caplog.text
    assert "pre-tuned schedule from" in caplog.text
    monkeypatch.setenv("TVM_QNN_SCHEDULES", "off")
    default = tvm_qnn.compile(sibling, "x86")
    assert tuned.assembly() != default.assembly()
    np.testing.assert_array_equal(tuned.run(feeds), default.run(feeds))
    # A layer of another shape finds no record: the default template, logged.
    monkeypatch.setenv("TVM_QNN_SCHEDULES", str(tmp_path))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        tvm_qnn.compile(make_conv_model("qcdq", in_ch=8, out_ch=8, act_bits=2), "x86")
    assert "no tuning record, default template" in caplog.text


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None
                    or shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="qemu-user / gcc-aarch64-linux-gnu missing (make sysdeps installs them)")
@pytest.mark.slow
def test_shipped_pretuned_schedules_are_used_and_exact(caplog):
    """The shipped model compiled for a Pi 4 picks schedules/aarch64-cortex-a72 by itself,
    and its code (run under qemu) gives the x86 result."""
    import os

    path = os.path.join(os.path.dirname(tvm_qnn.__file__), "models", "CNV_2W2A.onnx")
    with caplog.at_level(logging.INFO, logger="tvm_qnn"):
        art = tvm_qnn.compile(path, "arm_cpu:rasp4b")
    assert "(device class aarch64-cortex-a72)" in caplog.text
    # Every bit-serial kernel has a record (the integer first conv is not modelled: default).
    kernels = [r["kernel"] for r in art.layers]
    assert kernels.count("integer") == 1
    # (a record within MIN_GAIN of the default template's leaves the default: tuning.choice)
    assert caplog.text.count("pre-tuned schedule from") + caplog.text.count(
        "default template (no pre-tuned schedule beats it") == kernels.count("bit-serial")
    assert "pre-tuned schedule from" in caplog.text
    x = np.random.default_rng(4).random((1, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(art.run(x), tvm_qnn.compile(path, "x86").run(x))
