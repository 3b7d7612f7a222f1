"""Bring your own algorithm: a file, a module or an installed entry point joins run, sweep and report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bench  # noqa: F401
from bench import algorithms
from bench import results as store
from bench.cli import app, main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "filtered_bc.py"
runner = CliRunner()

#: A user's method in a module of their own: the test-only LinearBC under its own name.
USER_MODULE = '''
from typing import ClassVar
from _sim_data import LinearBC


class MyBC(LinearBC):
    name: ClassVar[str] = "my-bc"


class NotAnAlgorithm:
    pass


class Impostor(LinearBC):
    name: ClassVar[str] = "presa"
'''


def test_example_file_joins_a_sweep_and_a_report(sim_dataset_path, tmp_path):
    """docs/extending.md's example, by path, through `sweep` (YAML `algorithms:`) and `report`."""
    example = tmp_path / "filtered_bc.py"
    shutil.copy(EXAMPLE, example)  # a file outside the package, as a user's would be
    config = tmp_path / "sweep.yaml"
    config.write_text(f"tasks: [BallRun]\nalgorithms: ['{example}:FilteredBC']\nthresholds: [20]\nseeds: [0]\n"
                      "profile: smoke\nnum_queries: 200\ndevice: cpu\nworkers: 1\n"
                      "overrides: {all: {batch_size: 64, hidden: 64}}\n")
    results = tmp_path / "r"
    swept = runner.invoke(app, ["sweep", "--config", str(config), "--dataset", str(sim_dataset_path), "--results", str(results)])
    assert swept.exit_code == 0, swept.output
    assert "estimate: 1 cell(s) to train" in swept.output and "no measured speed yet for filtered-bc" in swept.output
    meta = store.load_meta(results)
    assert meta["algorithm"].tolist() == ["filtered-bc"]  # the class's declared name, not the path
    assert meta["cell_id"].iloc[0].startswith("BallRun__filtered-bc__k20__s0__smoke__q200__o-")
    report = runner.invoke(app, ["report", "--results", str(results), "--reps", "50"])
    assert report.exit_code == 0, report.output
    assert "filtered-bc" in report.output and "filtered-bc" in (results / "report" / "table.md").read_text()
    check_html_page(results / "report" / "report.html", tmp_path / "chromium")


def check_html_page(page: Path, profile: Path) -> None:
    """The report's one self-contained page, rendered by headless Chromium: the table and every figure
    (base64 PNGs, no other file) show, and the screenshot is of a drawn page, not a blank one."""
    import io
    import re

    from PIL import Image

    from _browser import browser

    text = page.read_text()
    assert "filtered-bc" in text and "BallRun" in text
    assert not re.search(r'src="(?!data:image/png;base64,)', text)  # nothing but embedded images
    pngs = len(re.findall(r'src="data:image/png;base64,', text))
    assert pngs >= 4, pngs  # reward-vs-cost, threshold bars, learning curves, aggregates...
    driver = browser(profile)
    try:
        driver.set_window_size(1280, 900)
        driver.get(page.as_uri())
        shown = driver.execute_script(
            "const t = document.querySelector('table'); const r = t.getBoundingClientRect();"
            "return {imgs: Array.from(document.images).map(i => i.complete && i.naturalWidth > 0),"
            " table: [r.width, r.height, r.top], cell: t.querySelector('tbody td').textContent};")
        shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L")
        driver.execute_script("document.images[0].scrollIntoView()")
        figure = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L")
    finally:
        driver.quit()
    assert len(shown["imgs"]) == pngs and all(shown["imgs"])  # every embedded figure decodes
    width, height, top = shown["table"]
    assert width > 200 and height > 20 and top < 900 and shown["cell"] == "BallRun"  # the table is above the fold
    for image in (shot, figure):
        histogram = image.histogram()
        assert max(histogram) < 0.97 * sum(histogram), "a blank screenshot"


def test_module_and_entry_point_specs_name_cells_by_the_declared_name(tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(USER_MODULE)
    dist = tmp_path / "my_methods-0.1.dist-info"  # what `pip install` of a package declaring the group writes
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{algorithms.ENTRY_POINT_GROUP}]\nmy-installed-bc = my_methods:MyBC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    assert algorithms.resolve_algorithm("my_methods:MyBC") == ("my-bc", "my_methods:MyBC")
    assert algorithms.resolve_algorithm("my-installed-bc") == ("my-installed-bc", "my_methods:MyBC")
    assert "my-installed-bc" in algorithms.algorithm_names()
    file_name, file_path = algorithms.resolve_algorithm(f"{tmp_path / 'my_methods.py'}:MyBC")
    assert file_name == "my-bc" and algorithms.load_class(file_path).__name__ == "MyBC"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no/such/file.py:X", "does not exist"),
        ("no_such_module_xyz:X", "no module named no_such_module_xyz"),
        ("{dir}/my_methods.py:Missing", "has no class Missing; its Algorithm classes: Impostor, LinearBC, MyBC"),
        ("{dir}/my_methods.py:NotAnAlgorithm", "not a subclass of bench.interfaces.Algorithm"),
        ("{dir}/my_methods.py:Impostor", "is named 'presa', which is presa.algorithm:PreSa"),
        ("{dir}/broken.py:X", "line 1"),
    ],
)
def test_bad_algorithm_specs_exit_2_one_line(spec, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_methods.py").write_text(USER_MODULE)
    (tmp_path / "broken.py").write_text("def (:\n")
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    code = main(["run", "--task", "BallRun", "--algo", spec.format(dir=tmp_path), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.strip().count("\n") == 0


def test_algos_lists_every_method_what_it_reads_and_its_set_keys_with_sources():
    result = runner.invoke(app, ["algos"])
    assert result.exit_code == 0, result.output
    for name in algorithms.REGISTRY:
        assert f"{name}  reads " in result.output
    assert "presa  reads feedback only" in result.output and "bc-safe  reads ground-truth reward and cost" in result.output
    # a key, its resolved default at the quick profile, and the source its config cites (rich markup kept literal)
    line = next(row for row in result.output.splitlines() if row.startswith("batch_size") and "96" in row)
    assert "[TraC/CPL: 96]" in line
    assert any(row.startswith("train_steps") and "10000" in row for row in result.output.splitlines())
    assert "[inferred]" in result.output


def test_algos_describes_a_users_file_and_run_help_points_at_it():
    result = runner.invoke(app, ["algos", f"{EXAMPLE}:FilteredBC", "--profile", "smoke"])
    assert result.exit_code == 0, result.output
    assert "filtered-bc  reads feedback only" in result.output
    assert any(row.startswith("lr ") and "0.001" in row and "OSRL's BC" in row for row in result.output.splitlines())
    assert "presa-bench algos" in " ".join(runner.invoke(app, ["run", "--help"]).output.split())


def test_docs_extending_shows_the_example_file_whole():
    doc = (ROOT / "docs" / "extending.md").read_text()
    assert f"```python\n{EXAMPLE.read_text()}```" in doc
