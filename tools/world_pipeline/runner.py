"""
Run a pipeline's stages (commands) one after another or side by side (:func:`run_stages`),
and Python functions side by side in processes of their own (:func:`side_by_side`).

Each stage runs in its own process group with its full output in its log file; chosen
lines are echoed. SIGINT/SIGTERM to the pipeline are forwarded to every running stage's
whole group (the stage and its data-loader workers) and waited for, so a killed
pipeline leaves nothing running that a re-run would race. A failed stage stops the
stages running beside it and ends the pipeline with the end of its log.

Side by side: on a CPU, small models use their threads poorly, so two processes with
one thread each do far more work than one with two (measured on 2 cores: two
120-iteration shapes-world trainings side by side took 1.7x less time than one after
the other). :func:`run_stages` gives each stage, as it starts, the cores divided among the
lanes still to finish: a lane that finished hands its cores to the next stage of the others.
A stage may wait for stages of earlier lanes (``Stage.after``), so that lanes keep each
other's order without ending together; an earlier lane has always started (or finished)
when a later one waits for it, so no wait can deadlock.
"""

import multiprocessing
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from vild_d2.errors import VildD2Error

__all__ = [
    "Stage",
    "StageFailed",
    "PipelineStopped",
    "run_stages",
    "side_by_side",
    "stop_group",
    "STOP_GRACE_SECONDS",
]

STOP_GRACE_SECONDS = 30  # a stopped stage gets this long to exit before SIGKILL


@dataclass
class Stage:
    """One command of a pipeline, and what shows that it already ran."""

    name: str  # shown in the pipeline's output; its log is OUTPUT/<name>.log
    command: Sequence[str]
    finished: Callable[[], Optional[str]] = lambda: None  # its finished output, or None
    show: Optional[Callable[[str], Optional[str]]] = None  # line -> the text to echo, or None
    after: Tuple[str, ...] = ()  # stages of earlier lanes it waits for (if they run at all)

    @property
    def log_name(self) -> str:
        """ "transfer vild" -> transfer_vild.log; "data (transfer)" -> data_transfer.log"""
        return "_".join(self.name.replace("(", "").replace(")", "").split()) + ".log"


class StageFailed(VildD2Error):
    """A stage exited with an error (its message holds the end of the stage's log)."""


class PipelineStopped(VildD2Error):
    """SIGINT or SIGTERM (``signum``) stopped the run, after every running stage was stopped."""

    def __init__(self, signum: int, stages: Sequence[str]):
        super().__init__(
            f"{', '.join(stages) or 'pipeline'}: stopped by signal {signum}; run the same"
            " command again to resume"
        )
        self.signum = signum


def stop_group(proc: subprocess.Popen, signum: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """Send ``signum`` to ``proc``'s process group; SIGKILL it after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signum)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:  # already gone
        pass


def _shown(cmd, cwd) -> str:
    if not cwd:
        return " ".join(cmd)
    return " ".join(os.path.relpath(c, cwd) if c.startswith(cwd + os.sep) else c for c in cmd)


class _Runner:
    def __init__(
        self,
        env: dict,
        jobs: Sequence[Sequence[Stage]],
        slots: int,
        log_dir: str,
        cwd: Optional[str],
    ):
        self.env = env
        self.log_dir = log_dir
        self.cwd = cwd
        self.parallel = slots > 1
        self.slots = slots
        self.lanes_left = len(jobs)  # lanes not finished (running or waiting for a slot)
        self.running: Dict[str, subprocess.Popen] = {}  # stage name -> its process
        self.lock = threading.Lock()
        self.finished = threading.Condition(self.lock)  # notified when a stage ends or all stop
        self.unfinished = {stage.name for job in jobs for stage in job}  # not finished yet
        self.stopping = False
        self.failure: Optional[str] = None
        self.seconds: Dict[str, float] = {}

    def say(self, name: str, text: str) -> None:
        prefix = f"[{name}] " if self.parallel else ""
        with self.lock:
            print(f"   {prefix}{text}", flush=True)

    def stage_env(self) -> dict:
        """The environment of a stage starting now: the cores shared by the unfinished lanes."""
        if not self.parallel:
            return self.env  # one slot: the process's own default
        sharing = min(self.slots, self.lanes_left)  # >= 1: this stage's lane is unfinished
        threads = str(_cores_each(sharing))
        return dict(self.env, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)

    def run(self, stage: Stage) -> None:
        with self.lock:
            if self.stopping:
                return
            print(f"\n== {stage.name}: {_shown(stage.command, self.cwd)}", flush=True)
            env = self.stage_env()
        t0 = time.time()
        log_path = os.path.join(self.log_dir, stage.log_name)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                list(stage.command),
                cwd=self.cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
            with self.lock:
                self.running[stage.name] = proc
                late = self.stopping  # a stop that came while it started
            if late:
                stop_group(proc, signal.SIGTERM)
            for line in proc.stdout:
                log.write(line)
                shown = stage.show(line.split("\r")[-1]) if stage.show else None
                if shown is not None:
                    self.say(stage.name, shown)
            proc.wait()
            with self.lock:
                del self.running[stage.name]
        if proc.returncode != 0:
            with self.lock:
                if self.stopping:  # stopped by the pipeline, not a failure of its own
                    return
            with open(log_path) as f:
                tail = "".join(f.readlines()[-20:])
            self.fail(
                f"stage '{stage.name}' failed (exit {proc.returncode}); end of "
                f"{log_path}:\n{tail}"
            )
            return
        self.seconds[stage.name] = time.time() - t0
        with self.lock:
            self.unfinished.discard(stage.name)
            self.finished.notify_all()
        inside = self.cwd and log_path.startswith(self.cwd + os.sep)
        where = os.path.relpath(log_path, self.cwd) if inside else log_path
        self.say(stage.name, f"done in {self.seconds[stage.name]:.0f}s (log: {where})")

    def wait_for(self, stage: Stage) -> None:
        """Until the stages ``stage`` waits for have finished, or the run stops."""
        with self.lock:
            while not self.stopping and self.unfinished.intersection(stage.after):
                self.finished.wait()

    def run_job(self, job: Sequence[Stage]) -> None:
        try:
            for stage in job:
                self.wait_for(stage)
                if self.stopping:
                    return
                self.run(stage)
        finally:
            with self.lock:
                self.lanes_left -= 1

    def stop_all(self, signum: int) -> List[str]:
        """Stop every running stage (and start no other); returns their names."""
        with self.lock:
            self.stopping = True
            self.finished.notify_all()
            running = dict(self.running)
        for proc in running.values():
            stop_group(proc, signum)
        return list(running)

    def fail(self, message: str) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = message
        self.stop_all(signal.SIGTERM)


def _check_waits(jobs: Sequence[Sequence[Stage]]) -> None:
    """ValueError when a stage waits for a stage of its own or of a later lane."""
    for index, job in enumerate(jobs):
        later = {stage.name for other in jobs[index:] for stage in other}
        for stage in job:
            wrong = later.intersection(stage.after)
            if wrong:
                raise ValueError(
                    f"stage '{stage.name}' waits for {sorted(wrong)}, of its own or a later lane:"
                    " a stage waits only for stages of earlier lanes"
                )


def run_stages(
    jobs: Sequence[Sequence[Stage]],
    env: dict,
    slots: int = 1,
    log_dir: str = ".",
    cwd: Optional[str] = None,
) -> Dict[str, float]:
    """
    Run ``jobs``, each a list of stages run in order, with up to ``slots`` jobs at once
    (jobs start in the order given), each stage in ``cwd`` with its whole output in
    ``log_dir``/its log name; a stage starts once the stages of earlier jobs that it waits
    for (``Stage.after``) have finished. Returns each stage's seconds.
    Raises StageFailed when a stage fails (message: the end of its log; the stages beside
    it are stopped) and PipelineStopped on SIGINT/SIGTERM (after stopping every running
    stage); the command line turns them into its exit codes.
    """
    jobs = [list(job) for job in jobs if job]
    _check_waits(jobs)
    slots = max(1, min(slots, len(jobs)))
    runner = _Runner(env, jobs, slots, log_dir, cwd)
    stopped_by: List[int] = []
    stopped: List[str] = []

    def forward(signum, _frame):
        stopped_by.append(signum)
        stopped.extend(runner.stop_all(signum))

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(max_workers=slots) as pool:
            futures = [pool.submit(runner.run_job, job) for job in jobs]
            pending = set(futures)
            while pending:  # short waits, so that the signal handler runs promptly
                _, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for future in futures:
                future.result()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopped_by:
        raise PipelineStopped(stopped_by[0], stopped)
    if runner.failure is not None:
        raise StageFailed(runner.failure)
    return runner.seconds


def side_by_side(parts: Sequence[tuple], meanwhile: Callable, processes: int = 1):
    """
    Run ``parts`` ((function, args) each; picklable) and ``meanwhile()``. With
    ``processes`` > 1, each part runs in a process of its own with the cores divided among
    the parts (spawned, not forked: the caller's OpenMP threads are not copied) while
    ``meanwhile`` runs here; else everything runs here, ``meanwhile`` first. Returns (the
    parts' results in order, meanwhile's). A part's exception is raised here.
    """
    if processes < 2:
        here = meanwhile()
        return [function(*args) for function, args in parts], here
    workers = min(processes, len(parts))
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_torch_threads,
        initargs=(_cores_each(workers),),
    ) as pool:
        futures = [pool.submit(function, *args) for function, args in parts]
        here = meanwhile()
        return [future.result() for future in futures], here


def _set_torch_threads(threads: int) -> None:
    import torch  # here: the runner itself imports no torch

    torch.set_num_threads(threads)


def _cores_each(sharing: int) -> int:
    """The machine's cores divided among ``sharing`` processes (at least one each)."""
    return max(1, (os.cpu_count() or 1) // sharing)
