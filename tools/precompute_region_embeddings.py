#!/usr/bin/env python
"""
ViLD's distillation targets: CLIP image embeddings of each training image's top M
proposals (1.0x and 1.5x crops, summed, normalised), written to a region store.

Proposals come from a trained RPN (any detectron2 config whose model has one; ViLD's is
class-agnostic and trained on the base categories, configs/LVIS-OV/rpn_R_50_FPN.yaml):

    python tools/precompute_region_embeddings.py --teacher ViT-B/32 \\
        --dataset lvis_v1_train_ov --output datasets/region_embeddings/lvis_v1_train_ov_ViT-B-32 \\
        --config-file configs/LVIS-OV/rpn_R_50_FPN.yaml --num-gpus 8 \\
        MODEL.WEIGHTS output/lvis_ov/rpn_R_50_FPN/model_final.pth

or from a detectron2 proposals file (ids, boxes, objectness_logits):

    python tools/precompute_region_embeddings.py --teacher my_clip.pt \\
        --json my_data/train.json --image-root my_data/images \\
        --proposals-file my_data/proposals.pkl --output my_data/regions

Each worker (``--num-gpus N``, with detectron2's ``--num-machines/--machine-rank/
--dist-url``; on a machine without GPUs, ``--device cpu`` runs N gloo processes) writes
its own shard; worker 0 finalises the store when all are done. Re-running the same
command resumes a killed run: finished images are not recomputed.
"""

import argparse
import json
import os
import re
import sys
from datetime import timedelta

import vild_d2  # noqa: F401  (first: registers datasets and components, imports detectron2 quietly)

# isort: split

import detectron2.utils.comm as comm
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from vild_d2.checkpoint.files import check_weights
from vild_d2.config import load_config
from vild_d2.data.datasets import load_image_list
from vild_d2.data.region_store import create_region_store, finalize_region_store
from vild_d2.data.region_store.images import record_images
from vild_d2.data.region_store.layout import (
    MANIFEST,
    RegionStoreError,
    file_digest,
    read_manifest,
    settings_mismatch,
)
from vild_d2.engine.launch import launch
from vild_d2.teacher import load_clip
from vild_d2.teacher.precompute import precompute_shard, worker_images
from vild_d2.teacher.proposals import FileProposals, RPNProposals
from vild_d2.utils.folder_lock import lock_folder

__all__ = ["build_parser", "parse_args", "main"]


# A config override's key ("MODEL.WEIGHTS"): where the trailing KEY VALUE pairs begin.
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def build_parser():
    parser = argparse.ArgumentParser(
        description="Precompute CLIP region embeddings of proposals into a region store.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_launch_flags(parser)
    _add_region_flags(parser)
    return parser


def _add_launch_flags(parser: argparse.ArgumentParser) -> None:
    """train_net.py's launch flags, and only those that mean something here."""
    parser.add_argument(
        "--config-file", default="", metavar="FILE", help="a config whose model has an RPN"
    )
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="workers per machine (GPUs, or CPU processes)"
    )
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument(
        "--dist-url", default="auto", help="torch.distributed init URL (auto: a free local port)"
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="KEY VALUE config overrides of --config-file, at the end (e.g. MODEL.WEIGHTS x.pth)",
    )


def _add_region_flags(parser: argparse.ArgumentParser) -> None:
    """What to embed, with which teacher, into which store."""
    parser.add_argument(
        "--teacher", required=True, help="CLIP model name or CLIP-format checkpoint"
    )
    parser.add_argument("--dataset", help="a registered dataset (e.g. lvis_v1_train_ov)")
    parser.add_argument("--json", help="or a COCO/LVIS-format json whose images to use ...")
    parser.add_argument("--image-root", help="... with the folder its file names are relative to")
    parser.add_argument(
        "--proposals-file", help="a detectron2 proposals pickle, instead of --config-file's RPN"
    )
    parser.add_argument("--output", required=True, help="the region store folder")
    parser.add_argument(
        "--num-regions", type=int, default=300, help="M: boxes kept per image, best first"
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[1.0, 1.5],
        help="crop enlargement factors whose embeddings are summed",
    )
    parser.add_argument(
        "--nms-thresh",
        type=float,
        default=0.7,
        help="IoU threshold of the NMS applied to --proposals-file boxes",
    )
    parser.add_argument(
        "--min-box-size",
        type=float,
        default=1.0,
        help="boxes narrower or shorter than this (pixels, after clipping) are skipped",
    )
    parser.add_argument("--commit-every", type=int, default=32, help="images per durable commit")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument(
        "--allow-untrained-rpn",
        action="store_true",
        help="accept a --config-file without MODEL.WEIGHTS (random proposals; for tests)",
    )


def _run_settings(args) -> dict:
    """
    The settings that must not change when a store is resumed (kept in its manifest and in
    every shard's header), with the content hashes (sha256) of the teacher checkpoint and
    of the RPN weights or proposals file: a file retrained at the same path is another run.
    Computed once per command (``args.settings``).
    """
    if getattr(args, "settings", None) is not None:
        return args.settings
    if args.proposals_file:
        proposals = {
            "proposals_file": os.path.abspath(args.proposals_file),
            "nms_thresh": args.nms_thresh,
            "proposals_sha256": file_digest(args.proposals_file),
        }
    else:
        weights = load_config(args.config_file, args.opts).MODEL.WEIGHTS
        proposals = {
            "rpn_config": args.config_file,
            "rpn_opts": list(args.opts),
            "rpn_weights_sha256": file_digest(weights) if os.path.isfile(weights) else None,
        }
    teacher = {"teacher_sha256": file_digest(args.teacher)} if os.path.isfile(args.teacher) else {}
    args.settings = dict(
        proposals,
        **teacher,
        dataset=args.dataset or os.path.abspath(args.json),
        num_regions=args.num_regions,
        min_box_size=args.min_box_size,
    )
    return args.settings


def _check_sources(args) -> None:
    """The images, the proposal source and M."""
    if bool(args.dataset) == bool(args.json):
        raise ValueError("give exactly one of --dataset and --json")
    if args.json and not args.image_root:
        raise ValueError("--json needs --image-root")
    if args.json and not os.path.isfile(args.json):
        raise ValueError(f"json not found: {args.json}")
    if args.dataset:
        if args.dataset not in DatasetCatalog.list():
            raise ValueError(f"dataset '{args.dataset}' is not registered")
    if bool(args.proposals_file) == bool(args.config_file):
        raise ValueError(
            "give exactly one proposal source: --proposals-file or --config-file (an RPN)"
        )
    if args.proposals_file and not os.path.isfile(args.proposals_file):
        raise ValueError(f"proposals file not found: {args.proposals_file}")
    if args.config_file:
        cfg = load_config(args.config_file, args.opts)  # ConfigError on a bad file or key
        if not cfg.MODEL.WEIGHTS and not args.allow_untrained_rpn:
            raise ValueError(
                f"{args.config_file} has no MODEL.WEIGHTS: its RPN would propose random boxes; "
                "add MODEL.WEIGHTS <the trained RPN> (or --allow-untrained-rpn)"
            )
        check_weights(cfg)  # ConfigError on a missing or unreadable checkpoint
    if args.num_regions < 1:
        raise ValueError(f"--num-regions must be >= 1, got {args.num_regions}")


def _check_store(args) -> None:
    """Create the store, or check an existing one was made with this run's settings."""
    model, _ = load_clip(args.teacher, device="cpu")
    world = args.num_gpus * args.num_machines
    settings = _run_settings(args)
    existed = os.path.exists(os.path.join(args.output, MANIFEST))
    # checks teacher, D, scales and shards of an existing store first (the plainest mismatch)
    create_region_store(
        args.output,
        teacher=args.teacher,
        embed_dim=int(model.text_projection.shape[1]),
        crop_scales=args.scales,
        num_shards=world,
        extra=settings,
    )
    if existed:
        recorded = read_manifest(args.output).get("extra", {})
        mismatch = settings_mismatch(args.output, recorded, settings)
        if mismatch:
            raise RegionStoreError(mismatch)
    record_images(args.output, _dataset_dicts(args))  # RegionStoreError: other image files


def _dataset_dicts(args):
    if args.json:
        return load_image_list(args.json, args.image_root)
    return DatasetCatalog.get(args.dataset)


def _proposal_source(args, image_ids):
    if args.proposals_file:
        source = FileProposals(args.proposals_file, nms_thresh=args.nms_thresh)
        source.check_covers(image_ids)
        return source
    cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", args.device])
    cfg.freeze()
    return RPNProposals(cfg)


def worker(args) -> None:
    """One rank: its shard of the store; rank 0 then finalises and prints the summary."""
    rank, world = comm.get_rank(), comm.get_world_size()
    setup_logger(distributed_rank=rank, name="vild_d2")
    dicts = _dataset_dicts(args)
    proposals = _proposal_source(args, [d["image_id"] for d in worker_images(dicts, rank, world)])
    model, _ = load_clip(args.teacher, device=args.device)
    stats = precompute_shard(
        dicts,
        proposals,
        model,
        args.output,
        teacher_name=args.teacher,
        rank=rank,
        world_size=world,
        num_regions=args.num_regions,
        scales=args.scales,
        min_box_size=args.min_box_size,
        commit_every=args.commit_every,
        extra=_run_settings(args),
    )
    all_stats = comm.gather(stats, dst=0)
    comm.synchronize()
    if comm.is_main_process():
        manifest = finalize_region_store(args.output)
        print(_summary_table(args.output, manifest, all_stats))


def _summary_table(store, manifest, all_stats) -> str:
    keys = ("images", "already_done", "regions", "boxes_clipped", "boxes_dropped")
    total = {k: sum(s[k] for s in all_stats) for k in keys}
    seconds = max(s["seconds"] for s in all_stats)
    total.update(
        seconds=round(seconds, 3),
        images_per_s=total["images"] / max(seconds, 1e-9),
        regions_per_s=total["regions"] / max(seconds, 1e-9),
        store_images=manifest["num_images"],
        store_regions=manifest["num_regions"],
    )
    lines = [
        (
            f"region store {store}: {manifest['num_images']} images,"
            f" {manifest['num_regions']} regions, D = {manifest['embed_dim']},"
            f" {manifest['num_shards']} shard(s), teacher {manifest['teacher']}"
        ),
        (
            "| worker | images | done before | regions | boxes clipped | boxes skipped | images/s |"
            " regions/s |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for rank, s in enumerate(all_stats):
        lines.append(
            f"| {rank} | {s['images']} | {s['already_done']} | {s['regions']} |"
            f" {s['boxes_clipped']} | {s['boxes_dropped']} | {s['images_per_s']:.2f} |"
            f" {s['regions_per_s']:.1f} |"
        )
    lines.append("summary: " + json.dumps(total))
    return "\n".join(lines)


def _error_line(e: BaseException) -> str:
    """The last line of a worker's traceback (mp.spawn wraps it), or the error itself."""
    lines = [l for l in str(e).strip().splitlines() if l.strip()]
    return lines[-1] if lines else type(e).__name__


def parse_args(argv=None):
    """
    The flags, then the trailing KEY VALUE overrides. The overrides are split off first, so
    that a flag with several values (``--scales 1.0 1.5``) cannot swallow them.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    start = next((i for i, a in enumerate(argv) if CONFIG_KEY.match(a)), len(argv))
    args = build_parser().parse_args(argv[:start])
    args.opts = list(args.opts or []) + argv[start:]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        # one writer per store: a second run on the same --output would append every image
        # again (the lock lives as long as this process; workers are its children)
        _check_sources(args)  # writes nothing: a refused run leaves no folder behind
        lock = lock_folder(args.output, "tools/precompute_region_embeddings.py")  # noqa: F841
        _check_store(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # FolderBusyError: RuntimeError
        print(f"precompute_region_embeddings.py: error: {e}", file=sys.stderr)
        return 2
    try:
        launch(
            worker,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            device=args.device,
            timeout=timedelta(hours=12),
        )  # workers wait for the slowest at the final barrier
    except (ValueError, RuntimeError, torch.multiprocessing.ProcessRaisedException) as e:
        print(f"precompute_region_embeddings.py: error: {_error_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
