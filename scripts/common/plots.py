"""Matplotlib helpers shared by the plot steps: a headless pyplot and reproducible PNG files."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str, tight: bool = False) -> None:
    """Write a matplotlib figure as PNG atomically (no timestamp metadata) and close it."""
    import io

    from scripts.common.files import atomic_write_bytes

    buffer = io.BytesIO()
    extra = {"bbox_inches": "tight", "pad_inches": 0.2} if tight else {}
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None}, **extra)
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
