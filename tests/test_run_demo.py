"""The README's main job in --quick mode runs every stage and leaves their artefacts."""

import json
import os
import subprocess
import sys

from PIL import Image

from .conftest import ROOT


def test_quick_demo(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "run_demo.py"), "--quick", "--device", "cpu",
         "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| Mask R-CNN R18-FPN (stock)   | segm |" in proc.stdout
    assert (out / "datasets/shapes_world/annotations/val.json").is_file()
    train_dir = out / "mask_rcnn_R_18_FPN_tiny"
    assert (train_dir / "model_final.pth").is_file()
    rows = [json.loads(l) for l in (train_dir / "metrics.json").read_text().splitlines()]
    evals = [r for r in rows if "bbox/AP" in r]
    assert evals and {"bbox/APr", "bbox/APc", "bbox/APf", "segm/APr"} <= set(evals[-1])
    picture = Image.open(out / "detections_val.png")
    assert picture.width > picture.height > 100
