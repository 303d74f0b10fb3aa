"""Render a Markdown file (a model card, an evaluation summary) as one standalone HTML page, so
the Snakemake report shows it inline (it only offers Markdown files as downloads).

YAML front matter (model card metadata) is shown as a code block. Uses markdown-it-py when it
is installed (it comes with rich), otherwise shows the Markdown text as preformatted text.

    python -m scripts.report_page --markdown results/runs/demo/export/README.md \
        --title "demo: model card" --out results/runs/demo/report/model_card.html
"""

from __future__ import annotations

import argparse
import html

from scripts.common.cli import fail
from scripts.common.files import atomic_write_text

STYLE = (
    "body{font-family:sans-serif;margin:1em;max-width:70em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px}pre{background:#f6f8fa;padding:8px;overflow:auto}"
)


def split_front_matter(text: str) -> tuple[str | None, str]:
    """(YAML front matter or None, the rest) of a Markdown text."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return text[4:end], text[end + 5 :]
    return None, text


def markdown_html(text: str) -> str:
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def page(text: str, title: str) -> str:
    meta, body = split_front_matter(text)
    meta_html = f"<pre>{html.escape(meta)}</pre>" if meta else ""
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{meta_html}{markdown_html(body)}</body></html>\n"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", required=True, help="the Markdown file")
    parser.add_argument("--title", required=True, help="the page title")
    parser.add_argument("--out", required=True, help="HTML file to write")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        with open(args.markdown, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{args.markdown}: cannot read the Markdown file: {exc}")
    atomic_write_text(args.out, page(text, args.title))


if __name__ == "__main__":
    main()
