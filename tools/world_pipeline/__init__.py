"""
The main job (``make demo``, tools/run_world_pipeline.py): ViLD's whole pipeline on the
embedded shapes world, stage by stage, each stage a command of this checkout you would also
run on LVIS. It drives the checkout's scripts and is not part of the installed vild_d2
package (as detectron2's tools/ and train_net.py are not part of detectron2).

    context    PipelineRun: one run's choices and where its artefacts live
    sizes      how big each stage is (the full run, --quick); the four compared detectors
    stages     the stages, declared: command, what "done" means; the phases they run in
    runner     runs stages (commands) one after another or side by side, signals forwarded
    artefacts  readers of what the stages leave (metrics.json, eval_results.json, records)
    analysis   AP per kind of novel category, CLIP on crops, the heads' accuracy, intervals
    claims     ViLD's claims, checked on those numbers
    report     OUTPUT/results.json, the printed tables, the README's generated section
    pictures   OUTPUT/detections_val.png, OUTPUT/expansion_val.png
    run        all of it, one call: run_pipeline

Import ``run`` (and what imports vild_d2) only once DETECTRON2_DATASETS names the world's
root: importing vild_d2 registers its datasets under that root. ``context`` and ``sizes``
import nothing of vild_d2.
"""
