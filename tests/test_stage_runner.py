"""The pipeline's stage runner: stages side by side, their threads, failures and order."""

import os
import sys
import time

import pytest

from world_pipeline.runner import Stage, StageFailed, run_stages, side_by_side


def _py(name, code, show=None):
    return Stage(name, [sys.executable, "-c", code], show=show)


def _sleeper(tmp_path, name, seconds, out):
    # writes its start/end times and its thread setting, then says "hello NAME"
    code = (
        "import os, time; t = time.time(); time.sleep(%r); "
        "open(%r, 'w').write(f\"{t} {time.time()} {os.environ.get('OMP_NUM_THREADS')}\"); "
        "print('hello %s')" % (seconds, str(out), name)
    )
    return _py(name, code, show=lambda line: line.strip() or None)


def _times(path):
    start, end, threads = path.read_text().split()
    return float(start), float(end), threads


def test_two_jobs_run_side_by_side_with_half_the_threads_each(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    seconds = run_stages(
        [[_sleeper(tmp_path, "a", 1.5, a)], [_sleeper(tmp_path, "b", 1.5, b)]],
        dict(os.environ),
        2,
        tmp_path,
    )
    (a0, a1, a_threads), (b0, b1, b_threads) = _times(a), _times(b)
    assert max(a0, b0) < min(a1, b1)  # they overlapped
    expected = str(max(1, (os.cpu_count() or 1) // 2))
    assert a_threads == b_threads == expected
    assert set(seconds) == {"a", "b"} and all(s >= 1.5 for s in seconds.values())
    printed = capsys.readouterr().out
    assert "[a] hello a" in printed and "[b] hello b" in printed  # prefixed when side by side
    assert "hello a" in (tmp_path / "a.log").read_text()


def test_a_finished_lane_hands_its_cores_to_the_next_stage_of_the_other(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    short, long, after = (tmp_path / f"{n}.txt" for n in ("short", "long", "after"))
    run_stages(
        [
            [_sleeper(tmp_path, "long", 1.0, long), _sleeper(tmp_path, "after", 0.1, after)],
            [_sleeper(tmp_path, "short", 0.2, short)],
        ],
        dict(os.environ),
        2,
        tmp_path,
    )
    (s0, s1, s_threads), (l0, l1, l_threads), (a0, _, a_threads) = (
        _times(short),
        _times(long),
        _times(after),
    )
    assert max(s0, l0) < min(s1, l1) and s1 <= a0  # "after" started once "short"'s lane ended
    assert (s_threads, l_threads) == ("2", "2")  # 4 cores, two lanes
    assert a_threads == "4"  # the lane left alone gets all four


def test_a_job_runs_its_stages_in_order_and_one_slot_runs_one_at_a_time(tmp_path):
    first, second, third = (tmp_path / f"{n}.txt" for n in ("1", "2", "3"))
    run_stages(
        [
            [_sleeper(tmp_path, "first", 0.3, first), _sleeper(tmp_path, "second", 0.3, second)],
            [_sleeper(tmp_path, "third", 0.3, third)],
        ],
        dict(os.environ, OMP_NUM_THREADS="7"),
        1,
        tmp_path,
    )
    t1, t2, t3 = _times(first), _times(second), _times(third)
    assert t1[1] <= t2[0] and t2[1] <= t3[0]
    assert t1[2] == "7"  # one slot: the caller's environment is kept


def test_a_failed_stage_stops_the_one_beside_it_and_names_its_log(tmp_path):
    slow = tmp_path / "slow.txt"
    failing = _py("broken", "import sys; print('the reason'); sys.exit(3)")
    t0 = time.time()
    with pytest.raises(StageFailed) as e:
        run_stages(
            [[_sleeper(tmp_path, "slow", 60, slow)], [failing]], dict(os.environ), 2, tmp_path
        )
    assert time.time() - t0 < 30  # the 60-second stage was stopped
    message = str(e.value)
    assert "stage 'broken' failed (exit 3)" in message and "the reason" in message
    assert str(tmp_path / "broken.log") in message
    assert not slow.exists()


def test_a_later_stage_of_a_failed_job_does_not_start(tmp_path):
    never = tmp_path / "never.txt"
    failing = _py("broken", "import sys; sys.exit(1)")
    with pytest.raises(StageFailed):
        run_stages(
            [[failing, _sleeper(tmp_path, "after", 0.1, never)]], dict(os.environ), 2, tmp_path
        )
    assert not never.exists()


def test_a_stage_waits_for_the_stage_of_an_earlier_lane_it_needs(tmp_path):
    cache, supervised, vild = (tmp_path / f"{n}.txt" for n in ("cache", "supervised", "vild"))
    waiting = _sleeper(tmp_path, "vild", 0.1, vild)
    waiting.after = ("cache",)
    run_stages(
        [
            [_sleeper(tmp_path, "cache", 1.0, cache)],
            [_sleeper(tmp_path, "supervised", 0.1, supervised), waiting],
        ],
        dict(os.environ),
        2,
        tmp_path,
    )
    (_, c1, _), (_, s1, _), (v0, _, _) = _times(cache), _times(supervised), _times(vild)
    assert s1 < c1 <= v0  # its own lane was done first; it still waited for "cache"


def test_a_stage_whose_awaited_stage_failed_never_starts(tmp_path):
    never = tmp_path / "never.txt"
    waiting = _sleeper(tmp_path, "after", 0.1, never)
    waiting.after = ("broken",)
    failing = _py("broken", "import sys, time; time.sleep(0.5); sys.exit(1)")
    with pytest.raises(StageFailed, match="broken"):
        run_stages([[failing], [waiting]], dict(os.environ), 2, tmp_path)
    assert not never.exists()


def test_waiting_for_a_stage_of_a_later_lane_is_refused_before_anything_runs(tmp_path):
    first = tmp_path / "first.txt"
    early = _sleeper(tmp_path, "early", 0.1, first)
    early.after = ("late",)
    with pytest.raises(ValueError, match="'early' waits for \\['late'\\]"):
        run_stages([[early], [_py("late", "print(1)")]], dict(os.environ), 2, tmp_path)
    assert not first.exists()


def test_side_by_side_runs_each_part_in_a_process_of_its_own():
    import torch

    parts = [(os.getpid, ()), (torch.get_num_threads, ()), (int, ("12",))]
    (pid, threads, twelve), here = side_by_side(parts, os.getpid, processes=2)
    assert here == os.getpid() and pid != here and twelve == 12
    assert threads == max(1, (os.cpu_count() or 1) // 2)  # the cores divided among 2 workers
    (pid, _, _), here = side_by_side(parts, os.getpid, processes=1)
    assert pid == here == os.getpid()  # one process: everything here
    with pytest.raises(ValueError, match="invalid literal"):  # a part's error is raised here
        side_by_side([(int, ("twelve",))], os.getpid, processes=2)
