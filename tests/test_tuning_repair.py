# SPDX-License-Identifier: Apache-2.0
"""tvm_qnn.tuning.repair: hostile database files are set aside before MetaSchedule reads them.

A bad line could crash the process (SIGSEGV in TVM), so the cases that crashed before the fix
run in a subprocess: a crash fails the test instead of killing pytest.
"""

import json
import logging
import subprocess
import sys
import time

import pytest
import tvm
from tvm import s_tir, te
from tvm.s_tir import meta_schedule as ms

from tvm_qnn.tuning import open_database

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


def _workload(k: int) -> tvm.IRModule:
    """A small TIR module, different for each ``k``."""
    a = te.placeholder((k + 1,), name="a")
    b = te.compute((k + 1,), lambda i: a[i] + 1.0, name="b")
    return tvm.IRModule({"main": te.create_prim_func([a, b])})


def _tiny_db(work, n_workloads: int = 1, records: int = 2) -> None:
    """``records`` records (empty traces, run_secs k*10 + r) of each of ``n_workloads``."""
    db = open_database(work, create=True)
    for k in range(n_workloads):
        mod = _workload(k)
        wl = db.commit_workload(mod)
        for r in range(records):
            db.commit_tuning_record(ms.database.TuningRecord(
                s_tir.Schedule(mod).trace, wl, [float(k * 10 + r)], tvm.target.Target("llvm"),
                None))


def _run(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=600)


_GOOD = [0, [[[], []], [1.0], None, None]]
# JSON lines MetaSchedule's JSONDatabase cannot take; the first two crashed it (SIGSEGV).
_BAD_RECORDS = [
    b'{"a": 1}', b"null", b'"x"', b"[0]", json.dumps([7, _GOOD[1]]).encode(),
    json.dumps([True, _GOOD[1]]).encode(), b'[0, {"a": 1}]', b"[0, [1, null, null, null]]",
    b'[0, [[[], []], ["x"], null, null]]', b'[0, [[[], []], null, "llvm", null]]',
    b"[0, [[[], []], null, null, 1]]", b"[0, [[[], []], [NaN], null, null]]",
    b"\xff\xfe\x00\x9c random bytes", b"",
]

_OPEN_EACH = """
import shutil, sys
from tvm_qnn.tuning import open_database
src, n = sys.argv[1], int(sys.argv[2])
for k in range(n):
    work = f"{src}_{k}"
    shutil.copytree(src, work)
    with open(f"{work}/database_tuning_record.json", "ab") as f:
        f.write(open(f"{src}_line{k}", "rb").read() + b"\\n")
    print(k, len(open_database(work).get_all_tuning_records()), flush=True)
"""


def test_record_lines_of_another_schema_are_set_aside_not_a_crash(tmp_path):
    src = tmp_path / "db"
    _tiny_db(src)
    for k, line in enumerate(_BAD_RECORDS):
        (tmp_path / f"db_line{k}").write_bytes(line)
    done = _run(_OPEN_EACH, src, len(_BAD_RECORDS))
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert done.stdout.split() == [str(x) for k in range(len(_BAD_RECORDS)) for x in (k, 2)]
    for k, line in enumerate(_BAD_RECORDS):
        records = tmp_path / f"db_{k}" / RECORDS
        # The warning names the file and the line; the line is kept aside, byte for byte.
        assert f"{records}: set aside 1 line(s)" in done.stderr
        assert (tmp_path / f"db_{k}" / (RECORDS + ".corrupt")).read_bytes() == line + b"\n"
        assert records.read_bytes() == (src / RECORDS).read_bytes()
    assert "line 3: not a [workload_index, record] pair" in done.stderr


_COMPILE = """
import sys
import time
import tvm_qnn
from tvm_qnn.testing.onnx_models import make_conv_model
model = make_conv_model("qcdq", in_ch=8, out_ch=8, size=(6, 6), act_bits=2, weight_bits=2)
work = sys.argv[1]
tvm_qnn.tune(model, "x86", trials=1, work_dir=work, seed=0)
for how in ("compile", "tune", "cli"):
    with open(work + "/database_tuning_record.json", "a") as f:
        f.write('{"a": 1}\\n')
    if how == "compile":
        tvm_qnn.compile(model, "x86", tuning_db=work)
    elif how == "tune":
        tvm_qnn.tune(model, "x86", trials=1, work_dir=work, seed=0)
    else:
        import onnx
        from tvm_qnn.cli import main
        onnx.save(model, work + "/model.onnx")
        assert main(["compile", work + "/model.onnx", "--tuning-db", work,
                     "-o", work + "/model.so"]) == 0
    print(how, "ok", flush=True)
"""


@pytest.mark.slow
def test_compile_tune_and_cli_survive_a_record_of_another_schema(tmp_path):
    work = tmp_path / "db"
    done = _run(_COMPILE, work)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert [w for w in done.stdout.split() if w in ("compile", "tune", "cli", "ok")] == [
        "compile", "ok", "tune", "ok", "cli", "ok"]
    assert done.stderr.count(f"{work / RECORDS}: set aside 1 line(s)") == 3
    assert {p.name for p in work.glob("*.corrupt*")} == {
        RECORDS + ".corrupt", RECORDS + ".corrupt.1", RECORDS + ".corrupt.2"}


def test_side_files_are_never_overwritten(tmp_path, caplog):
    work = tmp_path / "db"
    _tiny_db(work)
    records = work / RECORDS
    for cut in (b'[0, [[[], []], [1', b'[0, [[[], [' ):
        with open(records, "ab") as f:
            f.write(cut)  # a write cut short by a crash
        with caplog.at_level(logging.WARNING, logger="tvm_qnn"):
            assert len(open_database(work).get_all_tuning_records()) == 2
    assert (work / (RECORDS + ".corrupt")).read_bytes() == b'[0, [[[], []], [1\n'
    assert (work / (RECORDS + ".corrupt.1")).read_bytes() == b'[0, [[[], [\n'
    assert f"kept in {records}.corrupt.1 (line 3: not UTF-8 JSON" in caplog.text


_LIST = """
import re, sys
import tvm_qnn
from tvm_qnn.tuning import open_database
try:
    db = open_database(sys.argv[1])
except tvm_qnn.TvmQnnError as err:
    print("ERROR", err)
    sys.exit(3)
for rec in db.get_all_tuning_records():  # (k of the workload: its size - 1, run_secs)
    size = re.search(r"T.Buffer\\(\\((\\d+),\\)", str(rec.workload.mod)).group(1)
    print(int(size) - 1, float(rec.run_secs[0]))
"""


def test_a_cut_short_workload_table_is_a_clear_error_and_is_left_as_it_was(tmp_path):
    work = tmp_path / "db"
    _tiny_db(work)
    table = work / WORKLOADS
    table.write_bytes(table.read_bytes()[:500])  # the only workload line, cut short
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    done = _run(_LIST, work)
    assert done.returncode == 3, done.stdout[-1000:] + done.stderr[-3000:]
    assert (f"ERROR tuning database '{work}': no workload in database_workload.json can be "
            "read (line 1: not UTF-8 JSON (a write cut short?)), so none of its records can "
            "be used. Move the folder away") in done.stdout
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before


def test_a_bad_workload_line_takes_its_records_and_the_others_are_renumbered(tmp_path):
    work = tmp_path / "db"
    _tiny_db(work, n_workloads=3)
    table = work / WORKLOADS
    lines = table.read_bytes().split(b"\n")
    lines[1] = lines[1][:200]  # the middle workload, cut short
    table.write_bytes(b"\n".join(lines))
    done = _run(_LIST, work)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    # Workloads 0 and 2 keep their own records (run_secs k*10 + r), those of 1 are set aside.
    assert sorted(done.stdout.splitlines()) == ["0 0.0", "0 1.0", "2 20.0", "2 21.0"]
    assert f"{table}: set aside 1 line(s)" in done.stderr
    assert "line 3: its workload (line 2 of database_workload.json) was set aside" in done.stderr
    assert (work / (WORKLOADS + ".corrupt")).read_bytes() == lines[1] + b"\n"
    assert len((work / (RECORDS + ".corrupt")).read_bytes().splitlines()) == 2


_READ_ONLY = """
import builtins, os, sys
import tvm_qnn
from tvm_qnn.tuning import open_database
work = sys.argv[1]
if os.geteuid() == 0:  # root writes anywhere: refuse writes in the folder as a ro mount does
    real_open, real_os_open = builtins.open, os.open

    def refuse(path):
        if str(path).startswith(work):
            raise PermissionError(30, "Read-only file system", str(path))

    def read_only(path, mode="r", *args, **kwargs):
        if set(mode) & set("wxa+"):
            refuse(path)
        return real_open(path, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open, os.open = read_only, os_open
    os.replace = os.rename = lambda src, dst: refuse(src)
try:
    open_database(work)
except tvm_qnn.TvmQnnError as err:
    print("ERROR", err)
    sys.exit(3)
"""


def test_a_repair_in_a_read_only_folder_is_a_clear_error(tmp_path):
    work = tmp_path / "db"
    _tiny_db(work)
    records = work / RECORDS
    with open(records, "ab") as f:
        f.write(b'{"a": 1}\n')
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    work.chmod(0o555)
    try:
        done = _run(_READ_ONLY, work)
    finally:
        work.chmod(0o755)
    assert done.returncode == 3, done.stdout[-1000:] + done.stderr[-3000:]
    assert f"ERROR tuning database '{work}' has {records}: line 3: not a [workload_index, " \
        "record] pair, and they cannot be set aside: " in done.stdout
    assert "Read-only file system" in done.stdout or "Permission denied" in done.stdout
    assert "kept in" not in done.stderr
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before


_TUNE_PAUSED = """
import os, sys, time
import tvm_qnn
from tvm_qnn.testing.onnx_models import make_conv_model
tune_module = sys.modules["tvm_qnn.tuning.tune"]  # the package's "tune" is the function
work, channels, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "pause"
make_builder = tune_module.make_builder


def paused(*args, **kwargs):  # after tune opened the database, before it commits anything
    open(work + ".ready", "w").close()
    deadline = time.time() + 600
    while not os.path.exists(work + ".go") and time.time() < deadline:
        time.sleep(0.1)
    return make_builder(*args, **kwargs)


if pause:
    tune_module.make_builder = paused
# 4 output channels: one kernel family, one workload, on every x86 class (int8-dot blocks
# are 8 or 16 channels).
model = make_conv_model("qcdq", in_ch=channels, out_ch=4, size=(6, 6), act_bits=2,
                        weight_bits=2)
tvm_qnn.tune(model, "x86", trials=1, work_dir=work, seed=0)
"""


@pytest.mark.slow
def test_two_tunes_on_one_folder_file_records_under_their_own_workloads(tmp_path):
    """Tune A opens the folder, tune B runs whole meanwhile, then A goes on. Each numbers its
    workload by the table it read: without the lock, both are workload 0, and A's records
    are filed under B's workload."""
    work = tmp_path / "db"
    first = subprocess.Popen([sys.executable, "-c", _TUNE_PAUSED, str(work), "8", "pause"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = tmp_path / "db.ready"
        for _ in range(6000):
            if ready.exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), first.communicate()[1][-3000:]
        second = _run(_TUNE_PAUSED, work, 16, "run")
        assert second.returncode == 0, second.stderr[-3000:]
        (tmp_path / "db.go").touch()
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert len((work / WORKLOADS).read_bytes().splitlines()) == 2
    # A record's arguments say which model it is of: (1, channels, 6, 6) first.
    indices: dict[int, set] = {8: set(), 16: set()}
    for line in (work / RECORDS).read_text().splitlines():
        index, (_, _, _, args) = json.loads(line)
        indices[args[0][2][1]].add(index)
    assert indices[8] and indices[16] and not indices[8] & indices[16], indices


_REPLACE_RECORDS = """
import os, resource, signal, sys
import tvm_qnn
from tvm.s_tir import meta_schedule as ms
from tvm_qnn.tuning import open_database
from tvm_qnn.tuning.database import replace_records
work = sys.argv[1]
db = open_database(work)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def files():
    return {n: open(os.path.join(work, n), "rb").read() for n in sorted(os.listdir(work))
            if n != "database.lock"}


def twice_as_slow(new):
    for rec in db.get_all_tuning_records():
        new.commit_tuning_record(ms.database.TuningRecord(
            rec.trace, new.commit_workload(rec.workload.mod), [2 * float(rec.run_secs[0])],
            rec.target, rec.args_info))


for limit in map(int, sys.argv[2:]):
    before = files()
    # Writes past LIMIT bytes fail (EFBIG), as they would on a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        replace_records(work, twice_as_slow)
        print(limit, "replaced", flush=True)
    except tvm_qnn.TvmQnnError as err:
        print(limit, "ERROR", err, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    print(limit, "unchanged" if files() == before else "changed", flush=True)
"""


def test_records_replaced_on_a_full_disk_are_not_lost(tmp_path):
    """MetaSchedule does not check its appends: replace_records (re-timing, keep_best) used to
    publish the new files cut short by a full disk, 200 records becoming 100 and the workload
    table cut (then unreadable: every record lost). Now the old files stay."""
    work = tmp_path / "db"
    _tiny_db(work, n_workloads=2, records=100)
    cuts = [len((work / name).read_bytes()) // 2 for name in (RECORDS, WORKLOADS)]
    done = _run(_REPLACE_RECORDS, work, *cuts, 1 << 40)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    for limit in cuts:
        assert (f"{limit} ERROR tuning database '{work}': its 200 new records could not be "
                "written whole (is the disk full?); the database is left as it was.\n"
                f"{limit} unchanged") in done.stdout  # and no scratch folder is left
    assert f"{1 << 40} replaced\n{1 << 40} changed" in done.stdout
    secs = sorted(float(r.run_secs[0]) for r in open_database(work).get_all_tuning_records())
    assert secs == sorted(2.0 * (k * 10 + r) for k in range(2) for r in range(100))


def test_records_whose_trace_no_longer_replays_are_set_aside(tmp_path, caplog):
    """A record that is well formed but whose schedule no longer fits its workload (tuned
    for kernels that have changed since) made MetaSchedule refuse the whole folder; now it
    goes to the side file and the other records load."""
    work = tmp_path / "db"
    _tiny_db(work, records=2)
    sch = s_tir.Schedule(_workload(0))
    sch.get_sblock("b")
    stale = json.loads(json.dumps(sch.trace.as_json()).replace('"b"', '"no_such_block"'))
    with open(work / RECORDS, "a", encoding="utf-8") as f:
        f.write(json.dumps([0, [stale, [0.5], None, None]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="tvm_qnn"):
        records = open_database(work).get_all_tuning_records()
    assert sorted(float(r.run_secs[0]) for r in records) == [0.0, 1.0]
    assert "no longer applies" in caplog.text
    assert "no_such_block" in (work / (RECORDS + ".corrupt")).read_text()
