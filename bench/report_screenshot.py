"""Screenshot the Snakemake HTML report in headless Chromium, so a person can see it renders.

Uses Debian's `chromium` package (apt-get install -y chromium; nothing is downloaded) and
skips with a message when it is not installed. Without --report, builds the demo in a
temporary copy of the workflow (`snakemake`, then `snakemake --report report.html`) first.

    python bench/report_screenshot.py [--report report.html] [--out report.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.workflow_fixtures import copy_workflow, snakemake  # noqa: E402

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(browser: str, page: Path, out: Path, size: str = "1400,1000") -> None:
    """Render `page` (JavaScript given 10 s of virtual time) and write a PNG of the window."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            "--virtual-time-budget=10000",
            f"--screenshot={out.resolve()}",
            page.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)


def distinct_colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24) or [])


def build_report(tmp: Path) -> Path:
    workdir = copy_workflow(tmp / "demo")
    snakemake(workdir)
    snakemake(workdir, "--report", "report.html")
    return workdir / "report.html"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", help="an existing report.html (default: build the demo's)")
    parser.add_argument("--out", default="report_screenshot.png", help="PNG to write")
    args = parser.parse_args(argv)
    browser = find_chromium()
    if browser is None:
        print("report_screenshot: skipped: chromium is not installed (apt-get install -y chromium)")
        return
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(args.report) if args.report else build_report(Path(tmp))
        screenshot(browser, page, out)
    colours = distinct_colours(out)
    print(f"report_screenshot: {out} ({out.stat().st_size} bytes, {colours} distinct colours)")
    if colours < 16:
        raise SystemExit("report_screenshot: the screenshot is nearly blank; the report did not render")


if __name__ == "__main__":
    main()
