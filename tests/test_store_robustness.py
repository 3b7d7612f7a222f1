"""A broken or busy result store: readers skip a broken cell with one warning, `results check
--repair` moves broken cells aside (never deletes), rewrites never show a cell half gone, store path
problems are found before training."""

from __future__ import annotations

import threading

import pytest
import bench  # noqa: F401
from bench import results as store
from bench.cli import main
from tests.test_results import make_record


def _truncate(path, size: int = 200) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:size])


def test_a_truncated_episode_file_is_skipped_with_one_warning(tmp_path, capsys):
    store.write_cell(tmp_path, make_record("a"))
    store.write_cell(tmp_path, make_record("b", seed=1))
    broken = store.episodes_path(tmp_path, make_record("a").key)
    _truncate(broken)
    frame = store.load_results(tmp_path, meta=True)
    assert set(frame["algorithm"]) == {"b"} and len(frame) == 6
    assert set(store.load_curves(tmp_path)["algorithm"]) == {"a", "b"}  # its other tables still read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(broken) in err[0] and "presa-bench results check --repair" in err[0]


def test_a_truncated_meta_file_is_skipped_with_one_warning(tmp_path, capsys):
    store.write_cell(tmp_path, make_record("a"))
    store.write_cell(tmp_path, make_record("b", seed=1))
    _truncate(store.meta_path(tmp_path, make_record("b", seed=1).key))
    assert set(store.load_results(tmp_path)["algorithm"]) == {"a"}
    assert set(store.load_curves(tmp_path)["algorithm"]) == {"a"}
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("table", ["episodes", "curves"])
def test_a_cell_is_done_only_when_all_its_tables_read(tmp_path, table):
    record = make_record()
    store.write_cell(tmp_path, record)
    assert store.is_done(tmp_path, record.key, record.config_hash)
    _truncate(tmp_path / table / f"{record.key.cell_id}.parquet")
    assert not store.is_done(tmp_path, record.key, record.config_hash)


def test_results_check_repair_moves_broken_cells_aside_and_they_rerun(tmp_path, capsys):
    good, broken, orphan = make_record("a"), make_record("b", seed=1), make_record("c", seed=2)
    for record in (good, broken, orphan):
        store.write_cell(tmp_path, record)
    _truncate(store.episodes_path(tmp_path, broken.key))
    store.meta_path(tmp_path, orphan.key).rename(tmp_path / "kept-meta.parquet")  # curves + episodes left orphaned
    before = {(t, p.name): p.read_bytes() for t in ("episodes", "curves", "meta") for p in (tmp_path / t).glob("*")}

    assert main(["results", "check", "--results", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert broken.key.cell_id in out and orphan.key.cell_id in out and good.key.cell_id not in out
    assert "presa-bench results check --repair" in err and err.strip().count("\n") == 0

    assert main(["results", "check", "--repair", "--results", str(tmp_path)]) == 0
    moved = {(p.parent.name, p.name): p.read_bytes() for p in (tmp_path / "quarantine").rglob("*.parquet")}
    assert len(moved) == 5  # 3 files of the broken cell, 2 of the orphan: moved, byte for byte
    assert all(before[where] == data for where, data in moved.items())
    assert store.is_done(tmp_path, good.key, good.config_hash)
    assert not store.is_done(tmp_path, broken.key, broken.config_hash)
    assert main(["results", "check", "--results", str(tmp_path)]) == 0
    assert set(store.load_results(tmp_path)["algorithm"]) == {"a"}


def test_rewriting_a_cell_never_shows_it_half_gone(tmp_path):
    """A reader loops while a writer rewrites the same cell: every read sees the whole cell."""
    record = make_record()
    store.write_cell(tmp_path, record)
    errors: list[BaseException] = []
    sizes: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                sizes.append(len(store.load_results(tmp_path)))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            store.write_cell(tmp_path, record)
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[:3]
    assert sizes and set(sizes) == {6}


RUN = ["run", "--task", "BallRun", "--algo", "linear-bc", "--threshold", "20", "--profile", "smoke", "--device", "cpu"]


@pytest.fixture
def _linear_bc(monkeypatch):
    from tests import _sim_data

    _sim_data.register(monkeypatch)


def test_a_new_cell_runs_into_a_store_with_a_broken_file(_linear_bc, sim_dataset_path, tmp_path, capsys):
    other = make_record("a")
    store.write_cell(tmp_path, other)
    _truncate(store.episodes_path(tmp_path, other.key))
    code = main(RUN + ["--dataset", str(sim_dataset_path), "--results", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "results check --repair" in line]
    assert len(warnings) == 1 and other.key.cell_id in warnings[0]
    assert set(store.load_results(tmp_path)["algorithm"]) == {"linear-bc"}


@pytest.mark.parametrize("table", ["meta", "checkpoints"])
def test_a_store_folder_that_is_a_file_is_refused_before_training(_linear_bc, sim_dataset_path, tmp_path, capsys, monkeypatch, table):
    from bench import training

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the store was checked")

    monkeypatch.setattr(training, "train", no_training)
    (tmp_path / table).write_text("not a folder")
    code = main(RUN + ["--dataset", str(sim_dataset_path), "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(tmp_path / table) in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert (tmp_path / table).read_text() == "not a folder"


def test_a_full_disk_names_the_file_and_leaves_no_temp_files(tmp_path, monkeypatch):
    import errno
    import os

    from bench import io as bench_io
    from bench.errors import BenchError

    store.write_cell(tmp_path, make_record())
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    writes = []

    def full_disk(fd: int) -> None:
        writes.append(fd)
        if len(writes) == 2:  # the episodes file staged, the curves file finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bench_io.os, "fsync", full_disk)
    record = make_record(config={"lr": 5.0})
    with pytest.raises(BenchError, match="no space left on the device to write .*curves.*free some space"):
        store.write_cell(tmp_path, record)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before  # the stored cell is intact


def test_a_cell_finished_by_another_process_counts_as_done_not_failed(_linear_bc, sim_dataset_path, tmp_path, monkeypatch):
    """Two sweeps of one grid: the second waits for the cell the first is running, then skips it."""
    import fcntl

    from bench import runner

    spec = runner.CellSpec(task="BallRun", algorithm="linear-bc", threshold=20.0, seed=0, profile="smoke",
                           dataset=str(sim_dataset_path), device="cpu")
    cell = runner.resolve(spec)
    lock = tmp_path / "checkpoints" / f".{cell.key.cell_id}.lock"
    lock.parent.mkdir(parents=True)
    checked = threading.Event()
    is_done = store.is_done

    def watched(*args):  # type: ignore[no-untyped-def]
        done = is_done(*args)
        checked.set()
        return done

    monkeypatch.setattr(store, "is_done", watched)
    outcome = []
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # the other sweep runs the cell
        worker = threading.Thread(target=lambda: outcome.append(runner.run_cell_safely(spec, tmp_path)))
        worker.start()
        checked.wait(timeout=60)  # this sweep found the cell not done and went for its lock
        record = make_record()
        store.write_cell(tmp_path, store.CellRecord(
            key=cell.key, suite="bullet", config=cell.config, config_hash=cell.config_hash, episodes=record.episodes,
        ))
    worker.join(timeout=120)
    assert outcome and outcome[0].status == "skipped", outcome
    assert not store.load_failures(tmp_path)
