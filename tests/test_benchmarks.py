"""The one benchmark command runs every benchmark and writes one markdown file (smoke sizes)."""

import os
import subprocess
import sys

from .conftest import ROOT


def test_run_all_writes_every_benchmark(tmp_path):
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "benchmarks", "run_all.py"),
            "--quick",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "FAILED" not in text and "cores" in text
    for name in (
        "benchmark_inference.py",
        "benchmark_training.py",
        "benchmark_export.py",
        "benchmark_region_precompute.py",
        "benchmark_region_store.py",
        "benchmark_workers.py",
        "benchmark_precision.py",
        "benchmark_official.py",
        "benchmark_roi_align.py",
        "benchmark_avg_pool.py",
    ):
        assert f"tools/benchmarks/{name}" in text
    for row in (
        "| ViLD-ensemble |",
        "vs ViLD-text",
        "scripted / eager",
        "CLIP on cropped regions",
        "| ViLD training, s per iteration",
        "crc32",
        "| ViLD heads on cached features |",
        "bf16 / fp32",
        "official TF graph (estimate)",
        "separable / torchvision",
        "| bfloat16 | ",  # the average pools' table
    ):
        assert row in text, row
    pools = [line for line in text.splitlines() if line.startswith(("| float32 |", "| bfloat16 |"))]
    assert len(pools) == 2 and all("| yes |" in line for line in pools)  # the same numbers
