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
