"""The study's own files are input too: each test is a failure that once happened (a traceback, a file copied from
outside the folder, a committed study replaced by less, a run counted finished with its outputs missing)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_main

from common.errors import UserError
from common.lock import FolderLock
from experiments.carry import carry_over
from experiments.registry import Settings, plan
from experiments.runner import EVALUATE, TIMING_FILE, run_state

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PROGRESS": "0", "MPLBACKEND": "Agg"}


def _one_line_error(main, argv: list[str], capsys) -> str:
    assert run_main(main, argv) == 2, argv
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (argv, err)
    return err


def _plan(res: Path, keys: list[str]):
    return plan(Settings(res, str(res / "quick_data"), "cpu", quick=True, p1_epochs=1, p2_epochs=1), seeds=1,
                keys=keys)


# --- containment -------------------------------------------------------------------------------------------------

def test_continue_from_copies_nothing_from_outside_its_folder(tmp_path):
    """A crafted run entry naming a folder outside the source (relative or absolute) is refused, and a PNG that is a
    symlink out of the source is not followed."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "private.png").write_bytes(b"\x89PNG not yours")
    source = tmp_path / "source"
    res = tmp_path / "res"
    _, runs, _ = _plan(res, ["p2-regression"])
    run = runs[0]
    entry = {"experiment": run.experiment, "seed": run.seed, "problem": run.problem, "precision": "fp32",
             "config": {}}
    from experiments.registry import identity

    entry["config"] = identity(run.problem, dataclasses.asdict(run.config))
    for bad in ("../secret", str(secret)):
        source.mkdir(exist_ok=True)
        (source / "study.json").write_text(json.dumps({"runs": [{**entry, "dir": bad}]}))
        with pytest.raises(UserError, match="outside|relative folder inside"):
            carry_over(source, runs, [])
        assert not run.dir.exists()
    (source / "study" / "r").mkdir(parents=True)
    (source / "study" / "r" / "own.png").write_bytes(b"\x89PNG own")
    (source / "study" / "r" / "link.png").symlink_to(secret / "private.png")
    (source / "study.json").write_text(json.dumps({"runs": [{**entry, "dir": "study/r"}]}))
    assert carry_over(source, runs, [])["runs"] == [run.name]
    assert (run.dir / "own.png").is_file() and not (run.dir / "link.png").exists()


# --- nothing committed replaced by less --------------------------------------------------------------------------

def _study_doc(n: int) -> dict:
    return {"schema": 3, "meta": {"seeds": 1, "seeds_for": {}, "command": "python study.py"},
            "runs": [{"experiment": f"e{i}", "seed": 641, "dir": f"study/e{i}/seed641"} for i in range(n)],
            "experiments": {}, "families": [], "findings": [], "time": {}}


def test_report_only_does_not_replace_a_study_with_fewer_runs(tmp_path, capsys):
    import study

    res = tmp_path / "copy_of_docs_report"
    res.mkdir()
    (res / "study.json").write_text(json.dumps(_study_doc(3)))
    before = (res / "study.json").read_bytes()
    err = _one_line_error(study.main, ["--report-only", "--results-dir", str(res), "--no-bench"], capsys)
    assert "3 finished runs" in err and "--replace" in err
    assert (res / "study.json").read_bytes() == before


def test_export_checks_the_study_before_writing_and_never_drops_runs(tmp_path, capsys):
    import study

    res, out = tmp_path / "res", tmp_path / "out"
    res.mkdir()
    out.mkdir()
    (res / "REPORT.md").write_text("# report\n")
    (out / "study.json").write_text(json.dumps(_study_doc(2)))
    good = (out / "study.json").read_bytes()
    (tmp_path / "README.md").write_text("<!-- study:begin -->\n<!-- study:end -->\n")
    (res / "study.json").write_text('{"runs": "not a list"}')  # parses, wrong shape
    _one_line_error(study.main, ["--results-dir", str(res), "--export", str(out), "--readme",
                                 str(tmp_path / "README.md")], capsys)
    assert (out / "study.json").read_bytes() == good and not (out / "REPORT.md").exists()
    (res / "study.json").write_text(json.dumps(_study_doc(1)))  # a good study, but fewer runs than the export's
    err = _one_line_error(study.main, ["--results-dir", str(res), "--export", str(out)], capsys)
    assert "2 finished runs" in err and (out / "study.json").read_bytes() == good


# --- crash consistency ---------------------------------------------------------------------------------------------

def test_a_run_killed_before_its_last_file_is_evaluated_again(tmp_path):
    """metrics.json written, the study's timing file (written last) not: the run is not finished."""
    _, runs, _ = _plan(tmp_path / "res", ["p2-regression"])
    run = runs[0]
    run.dir.mkdir(parents=True)
    cfg = {**dataclasses.asdict(run.config), "precision": "fp32"}
    (run.dir / "config.json").write_text(json.dumps(cfg))
    (run.dir / "training_log.json").write_text(json.dumps([{"model": "regression", "epoch": 1, "time": {}, "val": {}}]))
    (run.dir / "regression_model.pth").write_bytes(b"")
    (run.dir / "metrics.json").write_text("{}")
    assert run_state(run) == EVALUATE
    (run.dir / TIMING_FILE).write_text('["not", "a", "timing"]')  # a timing file of the wrong shape: not finished
    assert run_state(run) == EVALUATE


def test_stale_temporary_files_are_removed_when_a_run_is_taken_up(tmp_path):
    from experiments.runner import remove_stale_temps

    d = tmp_path / "run"
    d.mkdir()
    (d / ".metrics.json.abc123.tmp").write_text("half")
    (d / "metrics.json").write_text("{}")
    assert remove_stale_temps(d) == 1
    assert sorted(p.name for p in d.iterdir()) == ["metrics.json"]


# --- files of the wrong shape ----------------------------------------------------------------------------------------

QUICK_RUN = ["--quick", "--quick-images", "16", "8", "--quick-epochs", "1", "1", "--device", "cpu", "--seeds", "1",
             "--experiments", "p2-regression", "--no-bench", "--run-figures", "none"]  # the files tested: no figures


@pytest.fixture(scope="session")
def finished_quick_run(tmp_path_factory) -> Path:
    """A results folder holding one finished quick run (copied by each test that breaks one of its files)."""
    import study

    res = tmp_path_factory.mktemp("finished") / "res"
    assert run_main(study.main, [*QUICK_RUN, "--results-dir", str(res)]) == 0
    return res


@pytest.mark.xdist_group("finished_quick_run")
@pytest.mark.parametrize("name,text", [("metrics.json", '{"methods": 3}'), ("metrics.json", "[]"),
                                       (TIMING_FILE, '{"evaluate_s": "fast"}'),
                                       ("training_log.json", '[{"model": "regression", "epoch": 1, "time": 5}]')])
def test_a_run_file_of_the_wrong_shape_is_one_line_or_repaired(finished_quick_run, tmp_path, capsys, name, text):
    """A finished quick run, then one of its files replaced by valid JSON of the wrong shape: the next
    ``--report-only`` names the file in one line, or the run counts as unfinished (to be repaired), never a
    traceback."""
    import study

    res = tmp_path / "res"
    shutil.copytree(finished_quick_run, res, symlinks=True)
    argv = [*QUICK_RUN, "--results-dir", str(res)]
    (res / "study" / "p2-regression" / "seed641" / name).write_text(text)
    code = run_main(study.main, [*argv, "--report-only"])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:  # the file named, or the run (now unfinished) not dropped from study.json
        assert len(err.strip().splitlines()) == 1 and (name in err or "p2-regression/seed641" in err), err
    assert run_main(study.main, argv) == 0  # the same study again repairs the run
    assert "runs: 0 train" in capsys.readouterr().out  # by evaluating (or resuming) it, not training it afresh
    assert json.loads((res / "study.json").read_text())["time"]["runs_finished"] == 1


def test_bench_and_carried_files_of_the_wrong_shape_are_one_line(tmp_path, capsys):
    import study

    res = tmp_path / "res"
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"meta": [], "results": {"problem2 heatmap": 3}}))
    err = _one_line_error(study.main, ["--report-only", "--results-dir", str(res), "--bench-json", str(bench)],
                          capsys)
    assert "bench.json" in err
    _, runs, _ = _plan(res, ["p2-regression"])
    runs[0].dir.mkdir(parents=True)
    (runs[0].dir / "carried.json").write_text(json.dumps({"source": "x", "entry": {"dir": 5, "config": "no"}}))
    err = _one_line_error(study.main, ["--report-only", "--results-dir", str(res), "--no-bench"], capsys)
    assert "carried.json" in err


# --- paths that cannot be written ----------------------------------------------------------------------------------

def _bad_paths(tmp_path: Path) -> list[str]:
    return ["/proc/study_out", "/sys/study_out", str(tmp_path / ("x" * 300)),
            os.fsdecode(bytes(tmp_path) + b"/caf\xe9")]


@pytest.mark.parametrize("script,flag", [("study", "--results-dir"), ("bench", "--json"),
                                         ("generate_datasets", "--output_dir"), ("problem2.train", "--results-dir"),
                                         ("problem1.train", "--results-dir"), ("problem2.evaluate", "--results-dir")])
def test_unwritable_output_paths_are_one_line(tmp_path, capsys, script, flag):
    import importlib

    main = importlib.import_module(script).main
    for path in _bad_paths(tmp_path):
        _one_line_error(main, [flag, path + "/b.json" if flag == "--json" else path], capsys)


# --- bounds and parsing --------------------------------------------------------------------------------------------

def test_bounds_and_ascii_digits(tmp_path, capsys):
    import generate_datasets
    import study

    res = str(tmp_path / "res")
    _one_line_error(study.main, ["--seeds", "100000", "--results-dir", res], capsys)
    _one_line_error(study.main, ["--seeds-for", "p1-spec=\u0663", "--results-dir", res], capsys)  # Arabic-Indic 3
    _one_line_error(generate_datasets.main, ["--seed", "-1", "--output_dir", str(tmp_path / "d")], capsys)
    assert not (tmp_path / "d").exists()
    readme = tmp_path / "README.md"
    readme.write_bytes(b"<!-- study:begin -->\n\xff\xfe\n<!-- study:end -->\n")
    _one_line_error(study.main, ["--export", str(tmp_path / "out"), "--readme", str(readme), "--results-dir", res],
                    capsys)
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "study.json").write_text("[" * 100000 + "]" * 100000)
    _one_line_error(study.main, ["--continue-from", str(deep), "--results-dir", res, "--report-only"], capsys)


# --- one study per folder ------------------------------------------------------------------------------------------

def test_a_second_study_on_one_folder_is_refused_naming_the_first(tmp_path, capsys):
    import study

    res = tmp_path / "res"
    with FolderLock(res, "study.py (a test)"):
        err = _one_line_error(study.main, ["--report-only", "--results-dir", str(res), "--no-bench"], capsys)
        assert "in use by study.py (a test)" in err and f"pid {os.getpid()}" in err
    # released with its holder, even one killed: a process that dies holding it leaves the folder usable
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, '.'); "
                               "from common.lock import FolderLock; l = FolderLock(sys.argv[1], 'x').__enter__(); "
                               "print('held', flush=True); time.sleep(60)", str(res)], cwd=ROOT, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    holder.kill()
    holder.wait()
    with FolderLock(res, "study.py"):
        pass


def test_reading_modes_need_no_writable_folder(capsys):
    """--list only reads: a folder that cannot be written (a colleague's, a read-only mount) still lists."""
    import study

    assert run_main(study.main, ["--list", "--only", "p1", "--results-dir", "/proc/study_list"]) == 0
    assert "p1-spec/seed641" in capsys.readouterr().out


def test_runs_trained_elsewhere_are_judged_by_their_own_record(tmp_path):
    """--executor slurm: a run a GPU node trained in bf16 is not "another run" on a CPU-only submitting host."""
    from experiments import runner

    _, runs, _ = _plan(tmp_path / "res", ["p2-regression"])
    run = runs[0]
    run.dir.mkdir(parents=True)
    (run.dir / "config.json").write_text(json.dumps({**dataclasses.asdict(run.config), "precision": "bf16"}))
    with pytest.raises(UserError, match="trained in bf16"):
        run_state(run)
    runner.set_remote(True)
    try:
        assert run_state(run) == "train" and runner.precision_conflicts(runs, runs) == []
    finally:
        runner.set_remote(False)



def test_the_study_makes_the_data_once_before_any_run_starts(tmp_path, monkeypatch):
    """Runs in --jobs workers (or Slurm jobs) that each found no data would generate it into one folder at the same
    time: the study makes it first, in its own process, for each problem it trains."""
    import study

    calls = []

    def ensure_data(data_dir, is_default, dataset):
        calls.append((str(data_dir), is_default, dataset))
        (Path(data_dir) / dataset).mkdir(parents=True)
        if len(calls) == 2:
            raise UserError("stop before training")

    monkeypatch.setattr(study, "ensure_data", ensure_data)
    monkeypatch.setattr(study, "run_study_parallel", lambda *a: pytest.fail("a run started before the data existed"))
    data = str(tmp_path / "data")
    argv = ["--experiments", "p1-spec", "p2-heatmap", "--seeds", "1", "--jobs", "2", "--no-bench",
            "--results-dir", str(tmp_path / "res"), "--data-dir", data]
    assert run_main(study.main, argv) == 2
    assert calls == [(data, False, "detection"), (data, False, "keypoints")]
    # a --data-dir that holds other files: nothing is generated there, and the study stops before any run
    monkeypatch.undo()
    monkeypatch.setattr(study, "run_study_parallel", lambda *a: pytest.fail("a run started without data"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    argv[-1] = str(tmp_path / "other")
    assert run_main(study.main, argv) == 2
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_study_runs_without_submitit_and_says_slurm_needs_it(tmp_path):
    """A lent GPU's image has no submitit and installs nothing: study.py must run there; only --executor slurm needs
    it, and says so in one line before any work."""
    code = ("import sys, runpy; sys.modules['submitit'] = None; sys.modules['submitit.helpers'] = None; "
            "sys.argv = ['study.py'] + sys.argv[1:]; runpy.run_path('study.py', run_name='__main__')")
    res = tmp_path / "res"
    r = subprocess.run([sys.executable, "-c", code, "--list", "--only", "p1", "--results-dir", str(res)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "p1-spec/seed641" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-c", code, "--executor", "slurm", "--results-dir", str(res)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == ("error: --executor slurm needs the submitit package: pip install "
                                                      "-r requirements.txt"), r.stderr
    assert not res.exists()
