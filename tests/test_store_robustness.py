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
