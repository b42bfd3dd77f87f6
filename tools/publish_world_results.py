#!/usr/bin/env python
"""
Put world-pipeline runs' results into the docs: README.md's generated results section (each
run's provenance, the first run's mask AP, every run's claims), docs/world_results.md (every
table of every run) and the first run's pictures (docs/world_*.png). Nothing is typed.

    python tools/publish_world_results.py output/world/results.json \\
        output/world_seed7/results.json
"""

import argparse
import os
import sys

from world_pipeline.context import ROOT


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "results",
        nargs="*",
        default=[os.path.join(ROOT, "output", "world", "results.json")],
        help="results.json of full runs, the one shown in the README's table first"
        " (default output/world/results.json)",
    )
    p.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    p.add_argument("--page", default=os.path.join(ROOT, "docs", "world_results.md"))
    p.add_argument("--pictures", default=os.path.join(ROOT, "docs"), help="folder of the pictures")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from world_pipeline.artefacts import PipelineError
    from world_pipeline.publish import load_runs, publish

    try:
        written = publish(load_runs(args.results), args.readme, args.page, args.pictures)
    except PipelineError as e:
        sys.exit(f"publish_world_results.py: error: {e}")
    print("wrote " + ", ".join(os.path.relpath(p) for p in written))


if __name__ == "__main__":
    main()
