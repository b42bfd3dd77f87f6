#!/usr/bin/env python
"""
Every benchmark of the project, one after the other on this machine, into one markdown
file (the machine named, each benchmark's command and its tables as printed: every
ratio comes with the raw times it is made of, measured in the same run).

    python tools/benchmarks/run_all.py [--output docs/benchmarks.md] [--quick]

``--quick`` shrinks every benchmark (a smoke run: its numbers are not the documented ones)
and runs each script once.
"""

import argparse
import datetime
import os
import subprocess
import sys
import time

from vild_d2.utils.provenance import machine_description

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# how the commands are shown: this interpreter, relative to the checkout when inside it
PYTHON = (
    os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT + os.sep) else "python"
)

# (title, script, full arguments, --quick arguments; None: skipped by --quick)
BENCHMARKS = [
    (
        "Inference: ViLD and ViLD-ensemble vs stock Mask R-CNN, C = 1203",
        "benchmark_inference.py",
        ["--classes", "1203"],
        ["--images", "1", "--size", "128", "--classes", "20"],
    ),
    (
        "Inference: the official ViLD architecture (converted) vs vild_d2's, R50, 1024 px",
        "benchmark_official.py",
        [],
        [
            "--images",
            "1",
            "--size",
            "128",
            "--classes",
            "20",
            "--proposals",
            "50",
            "--detections",
            "10",
        ],
    ),
    (
        "Training step per stage: bfloat16 autocast vs float32",
        "benchmark_precision.py",
        [],
        ["--steps", "1", "--size", "128", "--cached-images", "2", "--classes", "8"],
    ),
    (
        "Training step per stage, one thread (as the world pipeline's two lanes run them)",
        "benchmark_precision.py",
        ["--threads", "1", "--steps", "8"],
        None,  # --quick: the same script's smoke run above covers it
    ),
    (
        "roi_align's CPU backward: torchvision's kernel vs vild_d2's separable one",
        "benchmark_roi_align.py",
        [],
        ["--repeats", "2", "--world-only", "--rounds", "0"],
    ),
    (
        "CLIP's average pools on a CPU: torch's vs vild_d2's tiling one",
        "benchmark_avg_pool.py",
        [],
        ["--repeats", "2", "--steps", "1", "--batch", "8"],
    ),
    (
        "Training step: distillation vs ViLD-text, and ViLD-ensemble",
        "benchmark_training.py",
        [],
        ["--steps", "2", "--size", "128", "--regions", "8"],
    ),
    (
        "Export (TorchScript) vs eager; ViLD vs CLIP on cropped regions",
        "benchmark_export.py",
        [],
        [
            "--images",
            "1",
            "--size",
            "128",
            "--classes",
            "20",
            "--crop-images",
            "1",
            "--max-proposals",
            "4",
        ],
    ),
    (
        "Region precompute: pipeline vs encoder alone vs reference",
        "benchmark_region_precompute.py",
        [],
        ["--images", "2", "--regions", "4"],
    ),
    (
        "Two CPU workers vs one: the region tool and ViLD training",
        "benchmark_workers.py",
        [],
        ["--images", "2", "--regions", "2", "--iters", "3"],
    ),
    (
        "Region store: size, mapper time, read with its crc32 check",
        "benchmark_region_store.py",
        [],
        ["--images", "4", "--regions", "30", "--passes", "2"],
    ),
]


def _markdown(text: str) -> str:
    """A benchmark's output as markdown: a blank line before each table so that it renders."""
    out = []
    for line in text.strip().splitlines():
        if line.startswith("|") and out and out[-1].strip() and not out[-1].startswith("|"):
            out.append("")
        out.append(line)
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--output", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = p.parse_args()

    sections = [
        f"# Benchmarks\n\n`tools/benchmarks/run_all.py{' --quick' if args.quick else ''}`, "
        f"{datetime.date.today().isoformat()}, on: {machine_description()}.\n"
        + ("\n**Smoke run (--quick): tiny sizes, numbers not meaningful.**\n" if args.quick else "")
    ]
    failed = []
    for title, script, full, quick in BENCHMARKS:
        if args.quick and quick is None:
            continue
        extra = quick if args.quick else full
        cmd = [sys.executable, os.path.join(HERE, script), *extra]
        print(
            f"== {title}: {' '.join(['python', 'tools/benchmarks/' + script, *extra])}", flush=True
        )
        t0 = time.time()
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
        )
        seconds = time.time() - t0
        body = _markdown(proc.stdout)
        if proc.returncode != 0:
            failed.append(script)
            body += "\n\nFAILED:\n" + "\n".join(proc.stderr.strip().splitlines()[-10:])
        print(f"   {'failed' if proc.returncode else 'done'} in {seconds:.0f}s", flush=True)
        shown = " ".join([PYTHON, f"tools/benchmarks/{script}", *extra])
        sections.append(f"## {title}\n\n`{shown}` ({seconds:.0f} s)\n\n{body}\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(sections))
    os.replace(tmp, args.output)
    print(f"wrote {args.output}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
