"""Plots, the cross-run comparison, report pages, and (slow) the Snakemake HTML report of a sweep."""

from __future__ import annotations

import base64
import json
import re
import shutil

import pytest
import yaml

from scripts import compare_runs, plot_metrics, plot_training, report_page
from scripts.compiler import steps

PNG = b"\x89PNG\r\n\x1a\n"


def report(run: str, tuned: dict, base: dict | None = None) -> dict:
    better = {k: k not in ("validation_loss", "perplexity") for k in tuned}
    improved = None
    if base:
        improved = {k: (tuned[k] > base[k]) == better[k] for k in tuned}
    metrics = {"base": base, "tuned": tuned}
    return {
        "schema_version": 1,
        "run": run,
        "examples": 10,
        "generated": 10,
        "metrics": metrics,
        "higher_is_better": better,
        "improved": improved,
        "worst": [],
    }


def test_loss_series_reads_training_and_validation_loss_last_entry_winning():
    entries = [
        {"step": 10, "loss": 3.0},
        {"step": 20, "loss": 2.5},
        {"step": 20, "eval_loss": 2.7},
        {"step": 20, "loss": 2.4},  # the same step logged again after a resume
        {"step": 20, "train_loss": 2.6},
    ]
    assert plot_training.loss_series(entries) == {"loss": [(10, 3.0), (20, 2.4)], "eval_loss": [(20, 2.7)]}


def test_plot_training_writes_a_png_and_names_a_bad_line(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(json.dumps({"step": s, "loss": 5 / s, "eval_loss": 6 / s}) + "\n" for s in (1, 2, 3))
    )
    plot_training.main(["--log", str(log), "--run", "demo", "--out", str(tmp_path / "loss.png")])
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG)
    log.write_text('{"step": 1, "loss": 2}\n{"step": 2,\n')
    with pytest.raises(SystemExit):
        plot_training.main(["--log", str(log), "--run", "demo", "--out", str(tmp_path / "bad.png")])
    assert f"{log}:2: not a JSON line" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_plot_metrics_panels_say_direction_and_improvement(tmp_path):
    rep = report(
        "demo", {"validation_loss": 2.0, "exact_match": 0.9}, {"validation_loss": 3.0, "exact_match": 0.95}
    )
    panels = plot_metrics.panels(rep)
    assert [p["title"] for p in panels] == ["exact_match ↑ ✗", "validation_loss ↓ ✓"]
    assert panels[0]["bars"] == [("base", 0.95), ("tuned", 0.9)]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(rep))
    plot_metrics.main(["--report", str(path), "--out", str(tmp_path / "metrics.png")])
    assert (tmp_path / "metrics.png").read_bytes().startswith(PNG)


def test_differing_values_keeps_only_what_differs():
    runs = {
        "a": {"train": {"learning_rate": 0.001, "lora": {"r": 8}}, "evaluate": {"metrics": ["bleu"]}},
        "b": {"train": {"learning_rate": 0.003, "lora": {"r": 8}}, "evaluate": {"metrics": ["bleu"]}},
        "c": {
            "train": {"learning_rate": 0.003, "lora": {"r": 16}},
            "evaluate": {"metrics": ["bleu"], "seed": 1},
        },
    }
    assert steps.differing_values(runs) == {
        "a": {"evaluate.seed": None, "train.learning_rate": 0.001, "train.lora.r": 8},
        "b": {"evaluate.seed": None, "train.learning_rate": 0.003, "train.lora.r": 8},
        "c": {"evaluate.seed": 1, "train.learning_rate": 0.003, "train.lora.r": 16},
    }
    assert steps.differing_values({"only": runs["a"]}) == {"only": {}}


def test_compare_table_marks_the_best_run_in_each_direction(tmp_path):
    reports = [
        report(
            "run-b",
            {"exact_match": 0.5, "validation_loss": 1.0},
            {"exact_match": 0.0, "validation_loss": 4.0},
        ),
        report(
            "run-a",
            {"exact_match": 0.9, "validation_loss": 2.0},
            {"exact_match": 0.0, "validation_loss": 4.0},
        ),
    ]
    diff = {"run-a": {"train.learning_rate": 0.003}, "run-b": {"train.learning_rate": 0.001}}
    paths = []
    for rep in reports:
        paths.append(tmp_path / f"{rep['run']}.json")
        paths[-1].write_text(json.dumps(rep))
    out = {kind: tmp_path / f"metrics.{kind}" for kind in ("md", "html", "png", "json")}
    compare_runs.main(
        [
            "--reports",
            *map(str, paths),
            "--diff-json",
            json.dumps(diff),
            "--markdown",
            str(out["md"]),
            "--html",
            str(out["html"]),
            "--png",
            str(out["png"]),
            "--json",
            str(out["json"]),
        ]
    )
    lines = out["md"].read_text().splitlines()
    assert "| run | train.learning_rate | exact_match ↑ | validation_loss ↓ |" in lines
    assert "| run-a | 0.003 | **0.9 (+0.9)** | 2 (-2) |" in lines
    assert "| run-b | 0.001 | 0.5 (+0.5) | **1 (-3)** |" in lines
    assert json.loads(out["json"].read_text())["best"] == {
        "exact_match": ["run-a"],
        "validation_loss": ["run-b"],
    }
    assert "<b>0.9 (+0.9)</b>" in out["html"].read_text()
    assert out["png"].read_bytes().startswith(PNG)


def test_report_page_renders_front_matter_and_tables(tmp_path):
    card = tmp_path / "README.md"
    card.write_text(
        "---\nlicense: apache-2.0\n---\n# demo\n\n| metric | tuned |\n|---|---|\n| bleu | 99 <b> |\n"
    )
    report_page.main(["--markdown", str(card), "--title", "demo: card", "--out", str(tmp_path / "card.html")])
    page = (tmp_path / "card.html").read_text()
    assert "<pre>license: apache-2.0</pre>" in page and "<h1>demo</h1>" in page
    assert "<td>bleu</td>" in page and "99 &lt;b&gt;" in page


# --- the Snakemake report of a real sweep --------------------------------------------------


def embedded_files(html: str) -> list[bytes]:
    """Every base64 data URI of the report, decoded."""
    return [
        base64.b64decode(m)
        for m in re.findall(r"data:[a-z/+.-]+;charset=[^;]+;filename=[^;]+;base64,([A-Za-z0-9+/=]+)", html)
    ]


@pytest.mark.slow
def test_snakemake_report_holds_loss_plot_comparison_and_cards(demo_build, tmp_path):
    """Two runs that differ in their learning rate (the demo, built once per session, and a
    second spec beside it): the default target adds the comparison, the plots and the report
    pages, and `--report` embeds them."""
    from tests.workflow_fixtures import jobs_run, snakemake

    workdir = tmp_path / "wf"
    shutil.copytree(demo_build, workdir, symlinks=True)
    spec = yaml.safe_load((workdir / "specs/demo.yaml").read_text())
    spec["train"]["learning_rate"] = 4e-3  # both learn the task: smoke tests pass
    (workdir / "specs/faster.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    ran = jobs_run(snakemake(workdir))  # the default target: export, compare, report pages
    assert ran["compare_runs"] == 1 and ran["plot_training"] == 2 and ran["report_page"] == 4, ran
    assert ran["train_model"] == 1 and "tokenize_shard" not in ran, ran  # the runs share their shards
    assert len(list(workdir.glob("results/audit/*.manifest.json"))) == 1  # and so one audit
    runs = ["demo", "faster"]
    table = (workdir / "results/compare/metrics.md").read_text()
    assert "| run | train.learning_rate | exact_match ↑ |" in table
    assert all(f"| {run} | " in table for run in runs)

    snakemake(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text()
    files = embedded_files(html)
    for run in runs:
        assert (workdir / f"results/runs/{run}/report/loss.png").read_bytes() in files
        assert (workdir / f"results/runs/{run}/report/model_card.html").read_bytes() in files
    compare_page = (workdir / "results/compare/metrics.html").read_bytes()
    assert compare_page in files and b'id="tunemake-compare"' in compare_page
    assert all(run in html for run in runs)  # the categories: one per run
    shutil.rmtree(workdir / "results/work", ignore_errors=True)
