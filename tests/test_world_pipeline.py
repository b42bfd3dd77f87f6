"""
The README's main job in --quick mode: every stage of the ViLD pipeline runs and leaves
an artefact that validates; a second run resumes (skips every finished stage).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .conftest import ROOT
from .helpers.installed import install_outside_checkout
from .helpers.scripts import load_script

MODELS = ("vild_text", "vild", "vild_ensemble", "mask_rcnn_supervised")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """vild_d2 in a fresh venv outside the checkout; the drivers copied without vild_d2/."""
    return install_outside_checkout(str(tmp_path_factory.mktemp("installed")))


def _demo(installed, out, expect_success=True):
    proc = subprocess.run(
        [
            installed.python,
            os.path.join(installed.drivers, "tools", "run_world_pipeline.py"),
            "--quick",
            "--device",
            "cpu",
            "--output",
            str(out),
        ],
        cwd=str(out.parent),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if not expect_success:
        return proc
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # no foreign block in what the user reads (each stage's own log keeps its output)
    noises = ("not used by the model", "meshgrid", "pkg_resources", "Assuming user provided")
    for noise in noises + ("is deprecated",):
        assert noise not in proc.stdout + proc.stderr, noise
    return proc.stdout


def _last_eval(model_dir, key):
    from world_pipeline.artefacts import final_evaluation

    found = final_evaluation(str(model_dir), key)
    assert found, f"{model_dir}: no evaluation with {key}"
    return found


@pytest.fixture(scope="module")
def smoke(installed, tmp_path_factory):
    """The smoke run's OUTPUT and what it printed."""
    out = tmp_path_factory.mktemp("smoke") / "demo"
    return out, _demo(installed, out)


def test_quick_demo_world_teacher_and_base_detector(smoke):
    """From a venv outside the checkout, with vild_d2 installed as a package."""
    out, _ = smoke
    world = out / "datasets" / "shapes_world"

    # data + teacher: a CLIP-format checkpoint that the teacher loader reads
    val = json.loads((world / "annotations" / "val.json").read_text())
    from vild_d2.teacher import load_clip

    teacher, _ = load_clip(str(world / "teacher" / "clip_world.pt"))
    assert teacher.text_projection.shape[1] == 64
    report = json.loads((world / "teacher" / "clip_world.json").read_text())
    assert report["zero_shot_val"]["boxes"] == len(val["annotations"])

    # text embeddings: the whole val vocabulary, novel (rare) categories included
    text = np.load(world / "teacher" / "clip_world_text.npy")
    names = json.loads((world / "teacher" / "clip_world_text.json").read_text())["class_names"]
    cats = sorted(val["categories"], key=lambda c: c["id"])
    assert names == [c["name"] for c in cats] and text.shape == (48, 64)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-4)
    rare = [c["name"] for c in cats if c["frequency"] == "r"]
    assert rare and set(rare) <= set(names)

    # the RoI-classification pretraining (the 8 shapes, never a category) the base detector
    # starts from
    pretrain = json.loads((out / "pretrain" / "roi_classifier.json").read_text())
    assert pretrain["labels"] == "shapes" and len(pretrain["classes"]) == 8
    assert len(pretrain["history"]) > 0 and 0.0 <= pretrain["val_top1"] <= 100.0
    base_config = (out / "base" / "config.yaml").read_text()
    assert str(out / "pretrain" / "roi_classifier.pth") in base_config

    # the ViLD heads' tau is 1 / the teacher's logit scale (CLIP's 100 gives the paper's 0.01)
    import yaml

    from vild_d2.teacher import load_clip

    scale = load_clip(str(world / "teacher" / "clip_world.pt"))[0].logit_scale.detach().exp().item()
    for key in MODELS[:3]:
        trained = yaml.safe_load((out / key / "config.yaml").read_text())
        assert abs(trained["MODEL"]["VILD"]["TEMPERATURE"] * scale - 1) < 1e-3

    # every training in bfloat16 autocast (the default --precision), the evaluations in float32
    for key in ("base", *MODELS):
        amp = yaml.safe_load((out / key / "config.yaml").read_text())["SOLVER"]["AMP"]
        assert amp == {"ENABLED": True, "DTYPE": "bfloat16"}, key
    assert report["bfloat16"] is True
    # and the teacher's recipe, which the run checks before it reuses a teacher
    from vild_d2.world.teacher_training import WORLD_TEACHER_LR

    assert report["channels_last"] is False and report["lr"] == WORLD_TEACHER_LR
    rpn_amp = yaml.safe_load((out / "rpn" / "config.yaml").read_text())["SOLVER"]["AMP"]
    assert rpn_amp["ENABLED"] is False

    # the base detector (everyone's initialisation) and its RPN's recall of novel and base objects
    assert (out / "base" / "model_final.pth").is_file()
    rpn = json.loads((out / "rpn" / "eval_results.json").read_text())
    assert {
        "proposals/R50_novel@300",
        "proposals/R50_base@300",
        "proposals/AR_novel@300",
        "proposals/R50_concept@300",
        "proposals/R50_compositional@300",
    } <= set(rpn)


def test_quick_demo_region_store(smoke):
    out, _ = smoke
    world = out / "datasets" / "shapes_world"

    # region store of every base-training image, M = 8, intact
    from vild_d2.data.region_store import RegionStore

    store = RegionStore(str(out / "region_embeddings" / "shapes_world_train_ov"))
    train = json.loads((world / "annotations" / "train.json").read_text())
    assert sorted(store.image_ids().tolist()) == sorted(im["id"] for im in train["images"])
    summary = store.verify(progress=False)  # raises on a corrupt shard
    assert summary["num_images"] == len(train["images"]) and summary["regions_per_image_max"] == 8
    # written by one worker process per lane (--jobs: 2 where the CPU has 2 cores or more)
    assert store.manifest["num_shards"] == (2 if (os.cpu_count() or 1) >= 2 else 1)


def test_quick_demo_detectors(smoke):
    out, _ = smoke

    # the ViLD models' heads trained on the base detector's cached RoI features (one epoch
    # in --quick), the supervised detector end to end
    from world_pipeline.sizes import QUICK

    assert (out / "roi_features" / "roi_features.pth").is_file()
    for key in MODELS[:3]:
        epochs = json.loads((out / key / "head_training.json").read_text())
        assert len(epochs) == QUICK.head_epochs and ("loss_image" in epochs[0]) == (
            key != "vild_text"
        )
    assert set(epochs[0]) == {"loss_image"}  # ViLD-ensemble (last): its image head alone
    # ... with ViLD-text's text head, as ViLD-text trained it
    import torch

    text, ensemble = (torch.load(str(out / k / "model_final.pth"))["model"] for k in MODELS[:3:2])
    for name in ("roi_heads.box_head.fc1.weight", "roi_heads.box_predictor.bbox_pred.weight"):
        assert torch.equal(ensemble[name], text[name]), name
    assert (out / "mask_rcnn_supervised" / "metrics.json").is_file()
    # four detectors, each evaluated with LVIS AP split by frequency
    for key in MODELS:
        assert (out / key / "model_final.pth").is_file()
        assert {f"{t}/{c}" for t in ("bbox", "segm") for c in ("AP", "APr", "APc", "APf")} <= set(
            _last_eval(out / key, "segm/AP")
        )


def test_quick_demo_report(installed, smoke):
    out, stdout = smoke

    for title in (
        "ViLD-text",
        "ViLD",
        "ViLD-ensemble",
        "Mask R-CNN (supervised)",
        "CLIP on cropped regions",
    ):
        assert f"| {title} |" in stdout
    assert "| APr-compositional | APr-concept |" in stdout
    assert "RPN recall@300" in stdout and "teacher zero-shot top-1" in stdout
    assert (
        "ViLD image head top-1" not in stdout
        and "ViLD-ensemble image head top-1 on val boxes" in stdout
    )
    assert "smoke run" in stdout and "[MISSED]" not in stdout  # --quick checks no claim
    results = json.loads((out / "results.json").read_text())
    assert results["precision"] == "bfloat16" and "bfloat16 training" in stdout
    # every stage ran the installed package: the drivers' copy has no vild_d2/ to import
    assert not os.path.exists(os.path.join(installed.drivers, "vild_d2"))
    assert results["provenance"]["vild_d2"].endswith(
        os.path.join(installed.site_packages, "vild_d2")
    )
    assert results["provenance"]["commit"] is None  # the copy is no git checkout
    assert (
        "Smoke run of an unknown commit, seed 0, bfloat16 training,"
        f" {results['size']['num_val']} val images, {results['provenance']['date']}" in stdout
    )
    assert [m["key"] for m in results["models"]] == list(MODELS)
    for m in results["models"]:  # the analysis's AP equals the LVIS evaluator's
        for task in ("segm", "bbox"):
            expected = m["lvis_evaluator"].get(f"{task}/AP")
            got = m["ap"][task]["AP"]
            # (detectron2 reports NaN for a model without detections; that is AP 0)
            assert abs((0.0 if np.isnan(expected) else expected) - got) < 1e-6, (m["key"], task)
        assert {"APr-compositional", "APr-concept"} <= set(m["ap"]["segm"])
    assert {(r["a"], r["b"], r["metric"]) for r in results["intervals"]} >= {
        ("vild", "vild_text", "APr")
    }
    assert [c["name"] for c in results["claims"]] == ["a", "a'", "b", "c", "d"]


def test_quick_demo_distillation_fit(tmp_path, smoke):
    out, stdout = smoke
    world = out / "datasets" / "shapes_world"
    results = json.loads((out / "results.json").read_text())

    # the distillation fit: the distilled models' and their probes' (8 images, M = 8)
    assert set(results["distillation_fit"]) == {"vild", "vild_ensemble"}
    for fit in results["distillation_fit"].values():
        assert 0 < fit["regions"] <= 64
        for found in (fit["student"], fit["probe"]["train"], fit["probe"]["held_out"]):
            # L1 between unit vectors in D = 64 is at most 2 * sqrt(64)
            assert 0 <= found["top1_agreement"] <= 100 and 0 <= found["l1"] <= 16
    assert "**distillation fit** on" in stdout and "regions of training images" in stdout
    # the fit's tool gives the analysis's numbers for the same images
    fit_json = tmp_path / "fit.json"
    tool = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "distillation_fit.py")]
        + ["--config-file", str(out / "vild" / "config.yaml"), "--images", "8"]
        + ["--probe-epochs", "1,2", "--output", str(fit_json)]
        + ["MODEL.WEIGHTS", str(out / "vild" / "model_final.pth")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DETECTRON2_DATASETS": str(world.parent)},
    )
    assert tool.returncode == 0, tool.stderr[-3000:]
    assert "| probe, 2 epochs |" in tool.stdout
    by_tool = json.loads(fit_json.read_text())
    assert by_tool["student"] == pytest.approx(results["distillation_fit"]["vild"]["student"])
    with pytest.raises(SystemExit, match="not a distilled model"):  # in-process: no 10 s start
        load_script("tools/distillation_fit.py").main(
            ["--config-file", str(out / "vild_text" / "config.yaml")]
        )


def test_quick_demo_head_accuracy_transfer_and_expansion(smoke):
    out, stdout = smoke
    world = out / "datasets" / "shapes_world"
    results = json.loads((out / "results.json").read_text())

    assert set(results["head_accuracy"]) == {"vild_text", "vild", "vild_ensemble"}
    assert set(results["head_accuracy"]["vild_ensemble"]) == {"text head", "image head"}
    assert set(results["head_accuracy"]["vild"]) == {"head"}
    assert {"base, base classes only", "cosine to true class"} <= set(
        results["head_accuracy"]["vild"]["head"]
    )

    picture = Image.open(out / "detections_val.png")
    assert picture.height > 4 * picture.width // 4  # ground truth + 4 model rows of 4 images

    # transfer: the ViLD models on val and on another vocabulary in one evaluation, no retraining
    transfer = json.loads((world / "annotations" / "transfer.json").read_text())
    assert len(transfer["images"]) == 4 and len(transfer["categories"]) == 24
    assert np.load(world / "teacher" / "clip_world_transfer_text.npy").shape == (24, 64)
    assert set(results["transfer"]) == {"vild_text", "vild", "vild_ensemble"}
    for key, r in results["transfer"].items():
        assert {"AP", "APr", "APc", "APf"} <= set(r["transfer"]) and "AP" in r["val"]
        # only the transfer set is evaluated again: val is the model's own final evaluation
        evaluated = json.loads((out / "transfer" / key / "eval_results.json").read_text())
        same = lambda a, b: a == pytest.approx(b, nan_ok=True)  # noqa: E731 (NaN: no detections)
        assert same(r["transfer"]["AP"], evaluated["segm/AP"])
        assert same(r["val"]["AP"], _last_eval(out / key, "segm/AP")["segm/AP"])
        assert not any("/segm/" in k for k in evaluated)  # one dataset: no per-dataset keys
    assert "**transfer**" in stdout and "**systematic expansion**" in stdout
    # systematic expansion: shapes x colours for each ViLD model, and its picture
    assert set(results["expansion"]) == {"vild_text", "vild", "vild_ensemble"}
    assert all({"AP", "APr", "APc", "APf"} <= set(r) for r in results["expansion"].values())
    assert (
        Image.open(out / "expansion_val.png").height > 4 * picture.width // 4
    )  # ground truth + 4 rows


def test_quick_demo_resumes_and_its_models_serve_the_page(installed, smoke):
    """Last of the smoke run's tests: it runs the demo again, then makes its pretraining stale."""
    out, _ = smoke
    world = out / "datasets" / "shapes_world"
    val = json.loads((world / "annotations" / "val.json").read_text())

    # a second run finds every stage done and only redraws and reprints
    again = _demo(installed, out)
    for stage in (
        "data",
        "teacher",
        "pretrain",
        "base",
        "rpn",
        "text",
        "roi features",
        *MODELS,
        "transfer text",
        *(f"transfer {k}" for k in MODELS[:3]),
        "analysis",
    ):
        assert (
            f"== {stage}: " in again
            and "skipped" in again.split(f"== {stage}: ")[1].splitlines()[0]
        )
    assert '"already_done": 24' in again  # the region tool found every image committed
    assert (out / "results.json").is_file()

    # the try-it page's models: the three ViLD models (not the supervised one), on any words
    from vild_d2.inference import OpenVocabularyDetector, find_model_folders

    assert [os.path.basename(m.path) for m in find_model_folders(str(out))] == sorted(MODELS[:3])
    detector = OpenVocabularyDetector.load(str(out / "vild_ensemble"), device="cpu")
    assert os.path.samefile(detector.teacher, world / "teacher" / "clip_world.pt")
    image = world / "val" / val["images"][0]["file_name"].split("/")[-1]
    found = detector(str(image), "red heart; blue arrow", score_threshold=0.0)
    assert len(found) > 0 and {d.name for d in found} <= {"red heart", "blue arrow"}

    # an output folder pretrained by an older recipe (base categories) is named, not reused
    info_file = out / "pretrain" / "roi_classifier.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({k: v for k, v in info.items() if k != "labels"}))
    stale = _demo(installed, out, expect_success=False)
    assert stale.returncode != 0 and "--labels base-categories" in stale.stderr
    assert str(out / "pretrain" / "roi_classifier.pth") in stale.stderr


def test_a_run_is_published_from_its_results_json(tmp_path, smoke):
    """The README's section and the results page are generated, never typed."""
    from world_pipeline.publish import BEGIN, END

    out, _ = smoke
    tool = [sys.executable, os.path.join(ROOT, "tools", "publish_world_results.py")]
    readme, page = tmp_path / "README.md", tmp_path / "world_results.md"
    readme.write_text(f"# title\n\nbefore\n{BEGIN}\ntyped by hand\n{END}\nafter\n")
    where = ["--readme", str(readme), "--page", str(page), "--pictures", str(tmp_path)]
    refused = subprocess.run(
        tool + [str(out / "results.json")] + where, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "a smoke run (--quick)" in refused.stderr
    assert "typed by hand" in readme.read_text()  # nothing written

    results = json.loads((out / "results.json").read_text())
    runs = []
    for seed, num_val in ((0, 600), (7, 100)):  # as a default run and --val-images 100 would
        run_dir = tmp_path / f"seed{seed}"
        run_dir.mkdir()
        size = {**results["size"], "num_val": num_val}
        run = {**results, "quick": False, "seed": seed, "size": size}
        (run_dir / "results.json").write_text(json.dumps(run))
        runs.append(str(run_dir / "results.json"))
    (tmp_path / "seed0" / "detections_val.png").write_bytes(
        (out / "detections_val.png").read_bytes()
    )
    done = subprocess.run(tool + runs + where, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "typed by hand" not in text
    provenance = results["provenance"]
    assert f"seed 0, bfloat16 training, 600 val images, {provenance['date']}" in text
    assert f"seed 7, bfloat16 training, 100 val images, {provenance['date']}" in text
    assert "| claim | seed 0 (no commit) | seed 7 (no commit, 100 val images) |" in text
    for title in ("ViLD-text", "ViLD", "ViLD-ensemble", "Mask R-CNN (supervised)"):
        assert f"| {title} | base" in text
    assert text.count("| (a) ViLD APr > ViLD-text APr") == 1 and "**missed**" in text
    assert page.read_text().count("**mask AP (%), LVIS protocol, rare = novel**") == 2
    assert (tmp_path / "world_detections_val.png").read_bytes() == (
        out / "detections_val.png"
    ).read_bytes()


def test_the_readme_has_one_generated_results_section():
    from world_pipeline.publish import BEGIN, END

    text = open(os.path.join(ROOT, "README.md")).read()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.index(BEGIN) < text.index(END)


def test_a_finished_stages_truncated_output_is_refused_not_reused(tmp_path):
    """A finished stage's output is read back before the stage is skipped: truncated, refused."""
    import pytest
    import torch

    from world_pipeline.artefacts import PipelineError
    from world_pipeline.stages import skip_finished

    weights = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.randn(1000, 100)}}, weights)
    assert skip_finished("base", str(weights)) == 0.0  # intact: reused
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    text = tmp_path / "clip_world_text.npy"
    np.save(text, np.ones((48, 64), np.float32))
    text.write_bytes(text.read_bytes()[:100])
    for name, path in (("base", weights), ("text", text)):
        with pytest.raises(PipelineError) as e:
            skip_finished(name, str(path))
        message = str(e.value)
        assert message.startswith(f"stage '{name}': {path} is not")
        assert "run again to redo the stage" in message and len(message.splitlines()) == 1


def test_a_teacher_of_another_recipe_is_refused_not_reused(tmp_path):
    """The teacher's .json record must hold the pipeline's recipe, or the run stops and says why."""
    import pytest

    from world_pipeline.artefacts import PipelineError, recipe_matches

    checkpoint = tmp_path / "teacher" / "clip_world.pt"
    wanted = {"steps": 1500, "lr": 2e-3, "channels_last": True}

    def teacher_matches(checkpoint, wanted, output):  # as the teacher stage calls it
        return recipe_matches(checkpoint, wanted, output, {"channels_last": False})

    assert teacher_matches(str(checkpoint), wanted, str(tmp_path / "out")) is False  # none yet
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    record = checkpoint.with_suffix(".json")
    record.write_text(json.dumps({"steps": 1500, "lr": 2e-3, "channels_last": True, "seed": 0}))
    assert teacher_matches(str(checkpoint), wanted, str(tmp_path / "out")) is True
    record.write_text(json.dumps({"steps": 1500, "lr": 3e-3, "seed": 0}))  # an older recipe
    with pytest.raises(PipelineError) as e:
        teacher_matches(str(checkpoint), wanted, str(tmp_path / "out"))
    message = str(e.value)
    # a flag the older record lacks counts as off
    assert "made with --lr 0.003 --channels-last False" in message
    assert "wants --lr 0.002 --channels-last True" in message
    assert "--steps" not in message and str(tmp_path / "out") in message
    # a pretraining inside the output: deleting the output is all it takes
    pretrained = tmp_path / "out" / "pretrain" / "roi_classifier.pth"
    pretrained.parent.mkdir(parents=True)
    pretrained.write_bytes(b"weights")
    pretrained.with_suffix(".json").write_text("{}")  # before --labels: base categories
    with pytest.raises(PipelineError) as e:
        recipe_matches(
            str(pretrained),
            {"labels": "shapes"},
            str(tmp_path / "out"),
            {"labels": "base-categories"},
        )
    assert "--labels base-categories, this run wants --labels shapes" in str(e.value)
    assert f"Delete {tmp_path / 'out'} (" in str(e.value)
