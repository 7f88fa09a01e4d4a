"""The run store survives half-written and hand-broken files, and its ids cannot name paths outside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlm_tui import atomic, runstore


@pytest.fixture
def store_runs():
    """Make run folders by hand; they are removed afterwards so other tests' listings stay clean."""
    made: list[Path] = []

    def make(run_id: str, config: str | None, state: str | None) -> Path:
        path = runstore.runs_dir() / run_id
        path.mkdir()
        made.append(path)
        if config is not None:
            (path / "config.json").write_text(config)
        if state is not None:
            (path / "state.json").write_text(state)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


GOOD_CONFIG = json.dumps({"model": "starter", "corpus": "c.txt", "created": "2000-01-01T00:00:00"})


def test_runs_skips_corrupt_runs_and_says_which(cli, store_runs):
    store_runs("20000101-000000-aaaa", '{"model": "star', '{"status": "completed"}')  # half-written
    store_runs("20000101-000000-bbbb", GOOD_CONFIG, "\0\0\0garbage")
    store_runs("20000101-000000-cccc", GOOD_CONFIG, "[1, 2]")
    store_runs("20000101-000000-dddd", GOOD_CONFIG, '{"status": "exploded"}')
    store_runs("20000101-000000-eeee", GOOD_CONFIG, None)
    store_runs("20000101-000000-ffff", GOOD_CONFIG, json.dumps({"status": "completed", "step": "many",
                                                                "perplexity_after": "low"}))
    store_runs("not-a-run-folder", None, None)
    code, out, err = cli("runs", "--json")
    assert code == 0 and "Traceback" not in err
    rows = {r["run_id"]: r for r in json.loads(out)["runs"]}
    for bad in "abcde":
        run_id = f"20000101-000000-{bad * 4}"
        assert run_id not in rows
        assert f"skipped run {run_id}" in err
    odd = rows["20000101-000000-ffff"]  # readable, with values of the wrong type: listed, nulls for those
    assert (odd["status"], odd["steps"], odd["perplexity_after"]) == ("completed", 0, None)
    code, out, err = cli("runs")
    assert code == 0 and "20000101-000000-ffff" in out


def test_resuming_a_corrupt_run_is_one_line(cli, store_runs):
    store_runs("20000101-000000-abab", GOOD_CONFIG, "{")
    code, _, err = cli("train", "--resume", "20000101-000000-abab")
    assert code == 1 and err.count("\n") == 1 and "state.json is unreadable" in err


def test_a_running_state_without_its_lock_holder_is_interrupted(store_runs):
    store_runs("20000101-000000-0a0a", GOOD_CONFIG, '{"status": "running", "pid": 1}')
    run = runstore.find_run("20000101-000000-0a0a")
    assert run.status() == "interrupted"
    with run.hold_lock():
        assert run.status() == "running"
    assert run.status() == "interrupted"


@pytest.mark.parametrize("ref", ["../20000101-000000-aaaa", "20000101-000000-aaaa/../../etc",
                                 "20000101-000000-aaaa\n", "/etc", "..", "20000101-000000-AAAA", ""])
def test_run_ids_that_are_not_ids_are_never_joined_to_the_store(ref, store_runs, monkeypatch):
    store_runs("20000101-000000-aaaa", GOOD_CONFIG, '{"status": "completed"}')
    joined = []
    real_truediv = Path.__truediv__

    def spy(self, other):
        if self == runstore.runs_dir():
            joined.append(other)
        return real_truediv(self, other)

    monkeypatch.setattr(Path, "__truediv__", spy)
    assert runstore.find_run(ref) is None
    assert joined == []


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic.write_json(path, {"status": "running", "step": 3})

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", no_space)
    with pytest.raises(OSError):
        atomic.write_json(path, {"status": "completed", "step": 8})
    assert atomic.read_json(path) == {"status": "running", "step": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_truncate_metrics_drops_only_later_steps(store_runs):
    store_runs("20000101-000000-1b1b", GOOD_CONFIG, '{"status": "failed"}')
    run = runstore.find_run("20000101-000000-1b1b")
    for row in ({"step": 0, "eval_perplexity": 9.0}, {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5},
                {"step": 3, "loss": 1.2}):
        run.append_metrics(row)
    with open(run.metrics_path, "a") as fh:
        fh.write('{"step": 4, "lo')  # the writer died mid-line
    run.truncate_metrics(after_step=2)
    assert [r["step"] for r in run.metrics()] == [0, 1, 2]


def test_a_new_run_is_preparing_from_its_first_file_and_interrupted_once_its_owner_is_gone():
    """The workbench shows a launched run at once; it must not flash `interrupted` while it prepares, and a
    preparing run whose process died is `interrupted` like any other."""
    run = runstore.create_run({"model": "m", "corpus": "c.txt"})
    try:
        assert runstore.find_run(run.run_id).status() == "preparing"
        with run.hold_lock():
            assert runstore.find_run(run.run_id).status() == "preparing"
        assert runstore.find_run(run.run_id).status() == "interrupted"  # its owner let go, still `preparing`
    finally:
        shutil.rmtree(run.dir)


def test_a_hand_edited_config_of_the_wrong_type_is_refused_by_field(cli, store_runs):
    config = json.loads(GOOD_CONFIG) | {"corpus": "c.txt", "chunk_size": "32"}
    store_runs("20000101-000000-c0c0", json.dumps(config), '{"status": "cancelled"}')
    code, _, err = cli("train", "--resume", "20000101-000000-c0c0")
    assert code == 1 and err.count("\n") == 1
    assert "config.json: chunk_size is '32', not a whole number" in err
    info = runstore.find_run("20000101-000000-c0c0").info()  # still listed, its settings marked unreadable
    assert info.config is None and "chunk_size" in info.config_problem


def test_deleting_a_live_run_is_refused_and_a_dead_one_goes_at_once(cli, store_runs):
    path = store_runs("20000101-000000-d0d0", GOOD_CONFIG, '{"status": "running"}')
    (path / "checkpoints" / "step-0000002").mkdir(parents=True)
    (path / "checkpoints" / "step-0000002" / "trainer_state.json").write_text('{"step": 2}')
    run = runstore.find_run("20000101-000000-d0d0")
    with run.hold_lock():
        code, _, err = cli("runs", "delete", run.run_id)
        assert code == 2 and "run 20000101-000000-d0d0 is running: cancel it before deleting it" in err
        assert path.is_dir()
    code, out, err = cli("runs", "delete", run.run_id, "--checkpoints-only", "--json")
    assert code == 0, err
    assert json.loads(out)["checkpoints_only"] is True and not (path / "checkpoints").exists()
    assert runstore.find_run(run.run_id).info().checkpoints == []
    code, out, _ = cli("runs", "delete", run.run_id)
    assert code == 0 and "deleted run 20000101-000000-d0d0" in out
    assert not path.exists() and runstore.find_run(run.run_id) is None
    assert not any(p.name.endswith("d0d0") for p in runstore.runs_dir().iterdir())


def test_a_run_that_stopped_on_a_bad_setting_names_it_as_each_face_does(cli):
    """Recorded once, read in the CLI by its flag and in the workbench by its form label."""
    from mlm_tui.errors import FieldError
    from mlm_tui.run_settings import label

    run = runstore.create_run({"model": "m", "corpus": "c.txt"})
    try:
        problem = FieldError("mlm_probability", "no masked token at {field} 0.01: raise {field} or "
                             "{chunk_size}", also=("chunk_size",))
        run.fail("failed", str(problem), problem)
        run.release()
        info = run.info()
        assert info.message == "no masked token at mlm probability 0.01: raise mlm probability or chunk size"
        assert info.message_for(label) == "no masked token at Mask prob. 0.01: raise Mask prob. or Chunk size"
        code, out, _ = cli("runs", "show", run.run_id)
        assert code == 0
        flags = "no masked token at --mlm-probability 0.01: raise --mlm-probability or --chunk-size"
        assert f"message    {flags}\n" in out
    finally:
        shutil.rmtree(run.dir)


def listed(run_id: str) -> runstore.RunInfo:
    (info,) = [i for i in runstore.list_infos()[0] if i.run_id == run_id]
    return info


def test_the_listing_follows_every_change_to_a_finished_run(home):
    """The listing keeps what it read of a finished run while its files stay as they were: each way a
    finished run changes shows at the next listing."""
    run = runstore.create_run({"model": "m", "corpus": "c.txt"})
    (run.checkpoints_dir / "step-0000002").mkdir(parents=True)
    (run.checkpoints_dir / "step-0000002" / "trainer_state.json").write_text('{"step": 2}')
    (run.checkpoints_dir / "step-0000002" / "model.safetensors").write_bytes(b"\0" * 50_000)
    run.update_state(status="completed", step=2)
    run.release()
    info = listed(run.run_id)
    assert (info.status, info.checkpoints) == ("completed", [2]) and info.bytes > 50_000

    runstore.delete_run(run, checkpoints_only=True)
    assert listed(run.run_id).checkpoints == [] and listed(run.run_id).bytes < 50_000

    config = json.loads((run.dir / "config.json").read_text())
    (run.dir / "config.json").write_text(json.dumps({**config, "model": "edited by hand"}))  # in place
    assert listed(run.run_id).model == "edited by hand"

    with run.hold_lock():  # resumed: its process takes the lock, then says so
        run.update_state(status="running")
        assert listed(run.run_id).status == "running"
    assert listed(run.run_id).status == "interrupted"  # its process is gone: no file changed, the lock did

    (run.dir / "state.json").write_text("{")
    (problem,) = runstore.list_infos()[1]
    assert problem.startswith(f"skipped run {run.run_id}: state.json is unreadable")
    shutil.rmtree(run.dir)
    assert runstore.list_infos() == ([], [])


def test_listings_of_two_stores_are_their_own(tmp_path, monkeypatch):
    for name in ("one", "two"):
        monkeypatch.setenv("MLM_TUI_HOME", str(tmp_path / name))
        runstore.create_run({"model": name, "corpus": "c.txt"}, run_id=RUN_IDS[name]).release()
    for name in ("one", "two", "one"):
        monkeypatch.setenv("MLM_TUI_HOME", str(tmp_path / name))
        assert [(i.run_id, i.model) for i in runstore.list_infos()[0]] == [(RUN_IDS[name], name)]


RUN_IDS = {"one": "20000101-000000-0001", "two": "20000101-000000-0002"}


def test_a_new_process_lists_what_an_earlier_one_read_and_what_changed_since(home):
    """A process's first listing takes the finished runs an earlier listing kept on disk, and reads again
    the runs that changed since; a kept listing that cannot be read is read from the runs' files."""
    done = runstore.create_run({"model": "m", "corpus": "c.txt"})
    done.update_state(status="completed", step=3, perplexity_after=12.5)
    done.release()
    changing = runstore.create_run({"model": "m", "corpus": "c.txt"})
    changing.update_state(status="cancelled")
    changing.release()
    first = {i.run_id: i for i in runstore.list_infos()[0]}
    assert (first[done.run_id].step, first[done.run_id].perplexity_after) == (3, 12.5)
    changing.update_state(status="failed", message="changed by another process")

    runstore._listed.clear()  # as a new process starts
    again = {i.run_id: i for i in runstore.list_infos()[0]}
    assert again[done.run_id] == first[done.run_id]
    assert (again[changing.run_id].status, again[changing.run_id].message) == ("failed",
                                                                             "changed by another process")
    for broken in ("{", '{"format": [], "runs": {}}', json.dumps({"format": runstore._listing_format(),
                                                                  "runs": {done.run_id: [[1], {"x": 1}]}})):
        (home / "cache" / "runs.json").write_text(broken)
        runstore._listed.clear()
        assert {i.run_id: i for i in runstore.list_infos()[0]} == again
