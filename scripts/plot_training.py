"""Plot a run's training curves: training loss and, when logged, validation (eval) loss per step;
for a GRPO run also the reward curves (the total and each term's mean) in a panel below.

Reads the trainer log `results/runs/<run>/train/log.jsonl` (one JSON object per logging step)
and writes a PNG.

    python -m scripts.plot_training --log results/runs/demo/train/log.jsonl --run demo \
        --out results/runs/demo/report/loss.png
"""

from __future__ import annotations

import argparse
import json
import re

from scripts.common.cli import fail
from scripts.common.plots import pyplot, save_png

FIGSIZE = (7.0, 4.2)
REWARD_FIGSIZE = (7.0, 7.0)
REWARD_TERM = re.compile(r"rewards/([A-Za-z0-9_]+)/mean")


def loss_series(entries: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs of `loss` (training) and `eval_loss` (validation), by step, last entry
    winning when a resumed run logged a step twice."""
    series: dict[str, dict[int, float]] = {"loss": {}, "eval_loss": {}}
    for entry in entries:
        for key, points in series.items():
            if isinstance(entry.get(key), (int, float)) and "step" in entry:
                points[int(entry["step"])] = float(entry[key])
    return {key: sorted(points.items()) for key, points in series.items()}


def reward_series(entries: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """GRPO's reward curves: "total" (the weighted sum, TRL's `reward`) and each term's mean
    (`rewards/<term>/mean`), as (step, value) pairs by step; empty for other objectives."""
    series: dict[str, dict[int, float]] = {}
    for entry in entries:
        if "step" not in entry:
            continue
        for key, value in entry.items():
            found = REWARD_TERM.fullmatch(key)
            name = "total" if key == "reward" else (found.group(1) if found else None)
            if name and isinstance(value, (int, float)):
                series.setdefault(name, {})[int(entry["step"])] = float(value)
    ordered = sorted(series, key=lambda name: (name != "total", name))
    return {name: sorted(series[name].items()) for name in ordered}


def draw_rewards(ax, rewards: dict) -> None:
    for name, points in rewards.items():
        steps, values = zip(*points)
        width = 2.2 if name == "total" else 1.2
        ax.plot(steps, values, linewidth=width, label=f"{name} (last {values[-1]:.3g})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean reward per completion")
    ax.set_title("rewards (total: weighted sum of the terms)")
    ax.grid(alpha=0.3)
    ax.legend()


def read_log(path: str) -> list[dict]:
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                fail(f"{path}:{number}: not a JSON line ({exc.msg}); rerun training to rewrite the log")
    return entries


def draw(series: dict, run: str, out: str, rewards: dict | None = None) -> None:
    plt = pyplot()

    if rewards:
        fig, (ax, reward_ax) = plt.subplots(2, 1, figsize=REWARD_FIGSIZE, layout="constrained", sharex=True)
        draw_rewards(reward_ax, rewards)
    else:
        fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    styles = {"loss": ("training loss", "-", None), "eval_loss": ("validation loss", "--", "o")}
    for key, (label, line, marker) in styles.items():
        if series[key]:
            steps, values = zip(*series[key])
            final = f" (last {values[-1]:.3g})"
            ax.plot(steps, values, linestyle=line, marker=marker, label=label + final)
    if not any(series.values()):
        ax.text(
            0.5,
            0.5,
            "no loss logged\n(train.logging_steps above the step count?)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    else:
        ax.legend()
    ax.set_xlabel("optimizer step")
    # GRPO's loss is its clipped policy objective (plus beta x KL), not a cross-entropy
    ax.set_ylabel("GRPO loss" if rewards else "cross-entropy per label token (nats)")
    ax.set_title(f"{run}: loss curves")
    ax.grid(alpha=0.3)
    save_png(fig, out)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True, help="the trainer's log.jsonl")
    parser.add_argument("--run", required=True, help="run name (the plot title)")
    parser.add_argument("--out", required=True, help="PNG to write")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    entries = read_log(args.log)
    draw(loss_series(entries), args.run, args.out, reward_series(entries))


if __name__ == "__main__":
    main()
