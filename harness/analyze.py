"""`python -m harness.analyze STUDY_DIR [STUDY_DIR …]`: tables, curves, heatmaps, report.

    python -m harness.analyze outputs/coco2ade                       # -> outputs/coco2ade/analysis/
    python -m harness.analyze outputs/coco2ade outputs/ade2coco --output outputs/table1
    python -m harness.analyze outputs/coco2ade --format md,tex --no-images

Works on finished, interrupted and failed studies (their trials' last evaluations are used and
marked †). Several studies (e.g. one per transfer pair) give one table with a column group per
pair, as in paper Tables 1–2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.analysis import ResultsError, analyze_studies
from harness.analysis.pipeline import TABLE_FORMATS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.analyze",
                                description=__doc__.split("\n")[0])
    p.add_argument("studies", nargs="+", type=Path, help="study output folder(s)")
    p.add_argument("--format", default=",".join(TABLE_FORMATS),
                   help="table formats, comma-separated from md,tex,csv (default: all)")
    p.add_argument("--output", type=Path, default=None,
                   help="output folder (default: STUDY_DIR/analysis; required for several)")
    p.add_argument("--no-images", action="store_true",
                   help="skip PNG/SVG export (HTML figures are always written)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    try:
        analyze_studies(args.studies, args.output, formats,
                        image_formats=() if args.no_images else ("png", "svg"), log=print)
    except (ResultsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
