"""
The world pipeline's stages, declared: each has a name, the command it runs (one you would
also run on LVIS) and what "done" means (the output read back before the stage is
skipped, so that a killed run resumes where it stopped). Stages run in phases, one after
another (``PHASES``, each a function of the run that gives its lanes); the lanes of a phase
run side by side (``--jobs``), each lane's stages in order, a stage that needs another
lane's output waiting for it (``Stage.after``). What each stage does and writes:
docs/world_pipeline.md.
"""

import os
from functools import partial
from typing import List, Optional

from vild_d2.config import load_config
from vild_d2.teacher import load_clip
from vild_d2.world.spec import ShapesWorldSpec
from vild_d2.world.teacher_training import WORLD_TEACHER_LR

from .artefacts import (
    EVAL_RESULTS_FILE,
    PipelineError,
    eval_results,
    num_images,
    recipe_matches,
    trained,
    unreadable,
    world_matches,
)
from .context import ROOT, PipelineRun
from .runner import Stage, run_stages
from .sizes import MODELS, PRETRAIN_LABELS, RECALL_K, TRAIN_DATASET, TRANSFER_DATASET, VAL_DATASET

__all__ = [
    "PHASES",
    "run_phases",
    "skip_finished",
    "detector_configs",
    "teacher_temperature",
]

CONFIGS = os.path.join(ROOT, "configs", "shapes_world")
RPN_CONFIG = os.path.join(CONFIGS, "rpn_R_18_FPN_tiny.yaml")
RPN_DONE_KEY = f"proposals/AR@{RECALL_K}"  # in the RPN's eval_results.json once it was evaluated
BASE_CONFIG = "base_R_18_FPN_tiny.yaml"  # the base detector's (and the pretraining's) config
MODEL_CONFIGS = {key: config for key, config, _, _ in MODELS}
HEAD_TRAINED = ("vild_text", "vild", "vild_ensemble")  # heads trained on cached RoI features


def lines_with(*words):
    """Echo the output lines that hold one of ``words``."""

    def show(line: str):
        line = line.rstrip()
        return line if any(w in line for w in words) else None

    return show


def training_progress(line: str):
    """detectron2's periodic 'eta: .. iter: N  total_loss: ..' line, shortened."""
    if " iter: " not in line or "total_loss" not in line or "eta:" not in line:
        return None
    return line[line.index("eta:") : line.index("time:")].strip() if "time:" in line else None


def _rel(path: str) -> str:
    """``path`` relative to ROOT (where stages run) if inside it: shorter command lines."""
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def _file_if(condition: bool, path: str) -> Optional[str]:
    return path if condition else None


def _with_record(path: str) -> Optional[str]:
    """``path`` if it and its .json record (written last) exist."""
    record = os.path.splitext(path)[0] + ".json"
    return _file_if(os.path.isfile(path) and os.path.isfile(record), path)


def _evaluated(output_dir: str, key: str) -> Optional[str]:
    """OUTPUT_DIR/eval_results.json if it holds ``key``."""
    return _file_if(key in eval_results(output_dir), os.path.join(output_dir, EVAL_RESULTS_FILE))


def _trained_weights(output_dir: str) -> Optional[str]:
    """OUTPUT_DIR/model_final.pth if the training also wrote its final evaluation."""
    return _file_if(trained(output_dir, "segm/AP"), os.path.join(output_dir, "model_final.pth"))


def data_stages(run: PipelineRun) -> List[List[Stage]]:
    """The world: its train/val/transfer splits and their images."""
    size = run.size
    spec = ShapesWorldSpec(seed=run.seed, num_train=size.num_train, num_val=size.num_val)
    command = run.script("datasets", "prepare_shapes_world.py") + ["--root", run.data_root]
    command += ["--num-train", str(size.num_train), "--num-val", str(size.num_val)]
    command += ["--seed", str(run.seed), "--num-transfer", str(size.num_transfer)]
    done = lambda: _file_if(world_matches(run.data_root, spec), run.data_root)  # noqa: E731
    return [[Stage("data", command, done, lines_with(".json", "images under"))]]


def transfer_data_stages(run: PipelineRun) -> List[List[Stage]]:
    """The transfer split alone, for a world made before it had one."""
    transfer_json = os.path.join(run.data_root, "annotations", "transfer.json")
    command = run.script("datasets", "prepare_shapes_world.py") + ["--root", run.data_root]
    command += ["--transfer-only", "--num-transfer", str(run.size.num_transfer)]
    wanted = run.size.num_transfer
    done = lambda: _file_if(num_images(transfer_json) == wanted, transfer_json)  # noqa: E731
    return [[Stage("data (transfer)", command, done, lines_with(".json"))]]


def schedule(run: PipelineRun, iters: int) -> List[str]:
    """A detector's solver options: ``iters`` iterations, the step at 80%."""
    return [
        "SOLVER.MAX_ITER",
        str(iters),
        "SOLVER.STEPS",
        f"({int(iters * 0.8)},)",
        "SOLVER.WARMUP_ITERS",
        str(min(50, iters // 2)),
        "SEED",
        str(run.training_seed),
    ]


def amp_options(run: PipelineRun) -> List[str]:
    """
    A training's SOLVER.AMP options: bfloat16 autocast unless the run asked for float32
    (docs/world_pipeline.md, "Precision": checked at full length against float32). The
    stages that only evaluate, and the teacher's distillation targets, stay float32.
    """
    if run.precision == "float32":
        return []
    return ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", run.precision]


def _train_net(run: PipelineRun, *args: str) -> List[str]:
    return run.script("train_net.py") + list(args)


def detector_lane(run: PipelineRun) -> List[Stage]:
    """
    The world's ImageNet (RoI classification of rendered scenes of every category, labelled
    by shape only: with base-only scenes labelled by category the detectors knew only the
    base shapes, docs/teacher.md), the base detector (every detector's initialisation) and
    its RPN's recall.
    """
    size, base_dir = run.size, run.path("base")
    pretrain = run.script("tools", "pretrain_world_detector.py") + ["--world", run.data_root]
    pretrain += ["--config-file", os.path.join(CONFIGS, BASE_CONFIG)]
    pretrain += ["--output", run.pretrained, "--images", str(size.pretrain_images)]
    pretrain += ["--steps", str(size.pretrain_steps), "--seed", str(run.seed)]
    pretrain += ["--labels", PRETRAIN_LABELS, *(["--batch-size", "16"] if run.quick else [])]
    pretrain += ["MODEL.DEVICE", run.device, *amp_options(run)]
    base = _train_net(run, "--resume", "--config-file", os.path.join(CONFIGS, BASE_CONFIG))
    base += ["MODEL.DEVICE", run.device, "OUTPUT_DIR", base_dir, "MODEL.WEIGHTS", run.pretrained]
    base += [
        "MODEL.BACKBONE.FREEZE_AT",
        "2",
        "DATASETS.TEST",
        "()",
        *schedule(run, size.base_iters),
        *amp_options(run),
    ]
    rpn = _train_net(run, "--eval-only", "--config-file", RPN_CONFIG, *rpn_options(run))
    pretrained = lambda: _file_if(  # noqa: E731
        recipe_matches(
            run.pretrained, {"labels": PRETRAIN_LABELS}, run.path(), {"labels": "base-categories"}
        ),
        run.pretrained,
    )
    based = lambda: _file_if(os.path.isfile(run.base_weights), run.base_weights)  # noqa: E731
    return [
        Stage("pretrain", pretrain, pretrained, lines_with("rendered", "wrote")),
        Stage("base", base, based, training_progress),
        Stage(
            "rpn", rpn, partial(_evaluated, run.path("rpn"), RPN_DONE_KEY), lines_with("copypaste")
        ),
    ]


def rpn_options(run: PipelineRun) -> List[str]:
    """The RPN evaluation's options: the base detector's weights."""
    opts = ["MODEL.DEVICE", run.device, "OUTPUT_DIR", run.path("rpn")]
    return opts + ["MODEL.WEIGHTS", run.base_weights]


def teacher_lane(run: PipelineRun) -> List[Stage]:
    """The teacher, then its text embeddings of the 48 categories and of the transfer vocabulary."""
    teacher = run.script("tools", "train_world_teacher.py") + ["--world", run.data_root]
    recipe = dict(images=run.size.teacher_images, steps=run.size.teacher_steps, seed=run.seed)
    recipe.update(lr=WORLD_TEACHER_LR, bfloat16=bool(amp_options(run)), channels_last=False)
    teacher += ["--output", run.teacher, "--images", str(recipe["images"])]
    teacher += ["--steps", str(recipe["steps"]), "--seed", str(recipe["seed"])]
    teacher += ["--bfloat16"] if recipe["bfloat16"] else []
    trained = lambda: _file_if(  # noqa: E731  (records before --channels-last: off)
        recipe_matches(run.teacher, recipe, run.path(), {"channels_last": False}), run.teacher
    )
    show = lines_with("rendered", "wrote")
    lane = [Stage("teacher", teacher, trained, show)]
    for name, dataset, output in (
        ("text", VAL_DATASET, run.text),
        ("transfer text", TRANSFER_DATASET, run.transfer_text),
    ):
        command = run.script("tools", "precompute_text_embeddings.py")
        command += ["--teacher", run.teacher, "--dataset", dataset, "--output", output]
        command += ["--device", run.device]
        lane.append(Stage(name, command, partial(_with_record, output), lines_with("wrote")))
    return lane


def base_and_teacher_stages(run: PipelineRun) -> List[List[Stage]]:
    return [detector_lane(run), teacher_lane(run)]


def region_stages(run: PipelineRun) -> List[List[Stage]]:
    """The RPN's top M proposals of every base-training image, embedded by the teacher."""
    command = run.script("tools", "precompute_region_embeddings.py")
    command += ["--teacher", run.teacher, "--dataset", TRAIN_DATASET]
    command += ["--config-file", RPN_CONFIG, "--output", run.store]
    command += ["--num-regions", str(run.size.num_regions), "--device", run.device]
    if run.device == "cpu" and run.jobs > 1:  # one process per lane, each with its cores
        command += ["--num-gpus", str(run.jobs)]  # (docs/runs.md, "Stages side by side")
    command += ["MODEL.WEIGHTS", run.base_weights]
    return [[Stage("regions", command, lambda: None, lines_with("summary:"))]]


def teacher_temperature(teacher: str) -> float:
    """
    tau for the ViLD heads: 1 / the teacher's learned logit scale. CLIP's is 100, which is
    the paper's tau = 0.01; the world's teacher learns its own (about 16), and its image and
    text embeddings are only as far apart as that scale made them.
    """
    model, _ = load_clip(teacher)
    return 1.0 / model.logit_scale.detach().exp().item()


def _temperature_options(run: PipelineRun) -> List[str]:
    """The ViLD heads' tau option, read from the teacher once per run (it exists by then)."""
    if run.tau_options is None:
        run.tau_options = ["MODEL.VILD.TEMPERATURE", f"{teacher_temperature(run.teacher):.4g}"]
    return run.tau_options


def detector_options(
    run: PipelineRun, key: str, tau: List[str], output_dir: Optional[str] = None
) -> List[str]:
    """
    The training options of detector ``key`` (a MODELS key), from the base detector, into
    ``output_dir`` (default OUTPUT/key).
    """
    opts = ["MODEL.DEVICE", run.device, "OUTPUT_DIR", output_dir or run.path(key)]
    opts += ["MODEL.WEIGHTS", run.base_weights]
    if key in HEAD_TRAINED:  # the seed of the cache's sampling and of the heads' training
        opts += ["SEED", str(run.training_seed)]
    else:
        opts += ["MODEL.BACKBONE.FREEZE_AT", "2", *schedule(run, run.size.detector_iters)]
    if key.startswith("vild"):
        opts += ["MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", run.text]
        opts += ["MODEL.VILD.NUM_DISTILL_REGIONS", str(run.size.num_regions), *tau]
        opts += ["DATASETS.REGION_STORE_TRAIN", run.store] if key != "vild_text" else []
    return opts


def _detector_stage(run: PipelineRun, key: str, tau: List[str], after=()) -> Stage:
    """
    Detector ``key`` trained from the base detector: the supervised one end to end
    (train_net.py), the ViLD ones by their heads on the base detector's cached RoI
    features (tools/train_heads_on_cached_features.py, why: its docstring).
    """
    config = os.path.join(CONFIGS, MODEL_CONFIGS[key])
    if key in HEAD_TRAINED:
        command = run.script("tools", "train_heads_on_cached_features.py")
        command += ["--config-file", config, "--epochs", str(run.size.head_epochs)]
        command += ["--cache", run.roi_features]
        if key == "vild_ensemble":  # its text head is ViLD-text's (the tool's docstring)
            command += ["--text-head", run.path("vild_text", "model_final.pth")]
        show = lines_with("epoch ", "copypaste: AP,")
    else:
        command = _train_net(run, "--resume", "--config-file", config)
        show = training_progress
    command += detector_options(run, key, tau) + amp_options(run)
    return Stage(key, command, partial(_trained_weights, run.path(key)), show, tuple(after))


def _roi_feature_stage(run: PipelineRun, tau: List[str]) -> Stage:
    """
    The base detector's pooled RoI features of every training image (sampled proposals and
    distillation regions), cached once for the three ViLD models' heads.
    """
    command = run.script("tools", "train_heads_on_cached_features.py")
    command += ["--cache-only", "--cache", run.roi_features]
    command += ["--config-file", os.path.join(CONFIGS, MODEL_CONFIGS["vild"])]
    command += detector_options(run, "vild", tau, output_dir=run.path("roi_features"))
    cached = lambda: _file_if(os.path.isfile(run.roi_features), run.roi_features)  # noqa: E731
    return Stage("roi features", command, cached, lines_with("cached in"))


def _transfer_stage(run: PipelineRun, key: str, tau: List[str]) -> Stage:
    """
    ViLD model ``key``, no retraining, on the transfer dataset with its own vocabulary (its
    val AP is its training's own final evaluation: evaluating val again would repeat it).
    """
    out = run.path("transfer", key)
    config = os.path.join(CONFIGS, MODEL_CONFIGS[key])
    command = _train_net(run, "--eval-only", "--config-file", config)
    command += ["MODEL.DEVICE", run.device, "OUTPUT_DIR", out]
    command += ["MODEL.WEIGHTS", run.path(key, "model_final.pth")]
    command += ["MODEL.VILD.TRAIN_TEXT_EMBEDDINGS", run.text, *tau]
    command += ["DATASETS.TEST", f"('{TRANSFER_DATASET}',)"]
    command += ["DATASETS.TEXT_EMBEDDINGS_TEST", f"('{_rel(run.transfer_text)}',)"]
    done = partial(_evaluated, out, "segm/AP")
    show = lines_with("copypaste: Task", "copypaste: AP,")
    return Stage(f"transfer {key}", command, done, show)


def detector_stages(run: PipelineRun) -> List[List[Stage]]:
    """
    The four detectors, and the ViLD models on the transfer dataset, in two lanes of about
    equal length: the RoI features cached, ViLD-text's heads on them, then ViLD-ensemble's
    (ViLD-text's text head and an image head trained alone) and the two models' transfer
    evaluations; beside them the supervised detector end to end, then ViLD's heads once
    the cache is written, and ViLD's transfer evaluation.
    """
    tau = _temperature_options(run)
    return [
        [
            _roi_feature_stage(run, tau),
            _detector_stage(run, "vild_text", tau),
            _detector_stage(run, "vild_ensemble", tau),
            _transfer_stage(run, "vild_ensemble", tau),
            _transfer_stage(run, "vild_text", tau),
        ],
        [
            _detector_stage(run, "mask_rcnn_supervised", tau),
            _detector_stage(run, "vild", tau, after=["roi features"]),
            _transfer_stage(run, "vild", tau),
        ],
    ]


# The phases, in order: each a function of the run giving its lanes of stages.
PHASES = [
    data_stages,
    transfer_data_stages,
    base_and_teacher_stages,
    region_stages,
    detector_stages,
]


def skip_finished(name: str, output: str) -> float:
    """A finished stage is not run again: its ``output`` is read back first."""
    problem = unreadable(output)
    if problem:
        raise PipelineError(
            f"stage '{name}': {output} {problem}; delete it (or the stage's folder) and run"
            " again to redo the stage"
        )
    print(f"\n== {name}: {output} exists, skipped")
    return 0.0


def run_phases(run: PipelineRun, env: dict) -> dict:
    """Run every phase's unfinished stages; each stage's seconds (0 for a skipped one)."""
    seconds = {}
    for phase in PHASES:
        lanes = []
        for lane in phase(run):
            todo = []
            for stage in lane:
                output = stage.finished()
                if output is None:
                    todo.append(stage)
                else:
                    seconds[stage.name] = skip_finished(stage.name, output)
            lanes.append(todo)
        seconds.update(run_stages(lanes, env, run.jobs, log_dir=run.out, cwd=ROOT))
    return seconds


def detector_configs(run: PipelineRun) -> list:
    """(key, title, config of the trained model) of each of the four detectors, in MODELS order."""
    tau = _temperature_options(run)
    configs = []
    for key, config, title, _ in MODELS:
        opts = detector_options(run, key, tau) + ["MODEL.WEIGHTS", run.path(key, "model_final.pth")]
        configs.append((key, title, load_config(os.path.join(CONFIGS, config), opts)))
    return configs


def rpn_config(run: PipelineRun):
    """The RPN evaluation's config (the base detector's RPN)."""
    return load_config(RPN_CONFIG, rpn_options(run))
