"""notebooks/quickstart.ipynb runs top to bottom with nbclient on the demo (CPU, offline) and
its outputs hold the figures: the loss curve and the metrics plot (image/png), the
base-against-tuned table and the generations (HTML tables).

To keep the suite's time down the notebook runs in a copy of the session's demo build
(tests/workflow_fixtures.py: demo_build), so its `snakemake export` cell finds everything up to
date and only `snakemake compare` (the plots) runs jobs; the full build is what demo_build's own
`snakemake export` did, with the same rules and spec.
"""

from __future__ import annotations

import shutil

import nbformat
import pytest

from tests.workflow_fixtures import REPO


def outputs(cell) -> list:
    return cell.get("outputs", [])


def text_of(cell) -> str:
    parts = []
    for out in outputs(cell):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_the_notebook_is_valid_and_its_gpu_cell_is_commented_out():
    nb = nbformat.read(REPO / "notebooks/quickstart.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    assert any("%pip install -q -r requirements.txt" in src and "IN_COLAB" in src for src in code)
    gpu = code[-1].splitlines()
    assert all(line.startswith("#") for line in gpu) and any(
        "examples/tinyllama_qlora.yaml" in x for x in gpu
    )
    assert (REPO / "examples/tinyllama_qlora.yaml").is_file()
    assert all(not outputs(cell) for cell in nb.cells if cell.cell_type == "code")  # stored clean


@pytest.mark.slow
def test_the_quickstart_notebook_runs_on_the_demo(demo_build, tmp_path):
    from nbclient import NotebookClient

    workdir = tmp_path / "wf"
    shutil.copytree(demo_build, workdir, symlinks=True)
    shutil.copytree(REPO / "notebooks", workdir / "notebooks")
    nb = nbformat.read(workdir / "notebooks/quickstart.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir / "notebooks")}}
    )
    client.execute()  # raises CellExecutionError on the first cell that fails

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for cell in code:
        assert not [o for o in outputs(cell) if o["output_type"] == "error"], cell.source
        assert cell.get("execution_count") is not None or cell.source.startswith("#"), cell.source
    build = next(
        cell for cell in code if 'snakemake("export")' in cell.source and not cell.source.startswith("#")
    )
    assert "Nothing to be done" in text_of(build), text_of(build)[-2000:]  # the demo build, reused
    images = [o for cell in code for o in outputs(cell) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the loss curve and the metrics plot
    for image in images:
        assert len(image["data"]["image/png"]) > 1000
    html = [
        o["data"]["text/html"] for cell in code for o in outputs(cell) if "text/html" in o.get("data", {})
    ]
    table, generations = html
    assert "exact_match" in table and "base" in table and "tuned" in table and "improved" in table
    assert "Spell" in generations and "reference" in generations
