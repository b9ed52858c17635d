"""The plan, the progress lines and the time table of ``reproduce.sh`` (its command:
``python -m ums_rep.plan plan|progress|table --out OUT STEP...``, :mod:`ums_rep.plan`).

``reproduce.sh`` runs its steps (one run folder ``OUT/<step>`` each: ``pretrain-cdae``,
``finetune-cxr-hetero-joint``, ``scan-echo``, ...) and, after some stages' runs, a closing step
of that stage (a comparison table of its runs). Each step's stage is named by :func:`stage_of`
from the step's name prefix, as registered with :func:`register_stage`: this package registers
UMS-Rep's ``pretrain``, ``finetune <task set>`` and ``scan``; another paper's package registers
its own stage (and its closing step, a stage of its own in the tables) through
:mod:`ums_rep.plugins`, which the command loads.

* A finished step leaves ``OUT/<step>/step_seconds`` (:data:`STEP_SECONDS`, written by
  ``reproduce.sh``): the seconds of the attempt that finished it (each attempt also writes its
  start, :data:`STEP_STARTED`). A step finished before a rerun is skipped and keeps those
  seconds, so the table of a resumed run covers every step.
* :func:`write_times` writes the table to ``OUT/times.json`` (:data:`TIMES`; atomically) at the
  end of a run; ``ums_rep.report`` reads it from the runs root ("How long each part took").
* :func:`plan_lines` and :func:`eta` estimate the steps still to run from the previous run's
  ``times.json`` under the same OUT (each step's seconds then); a step it does not name is
  estimated by the mean of this OUT's finished steps of the same stage, and otherwise has no
  estimate.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

TIMES = "times.json"
STEP_SECONDS = "step_seconds"
STEP_STARTED = "step_started"


@dataclass(frozen=True)
class Stage:
    """A stage of ``reproduce.sh``'s steps (:func:`register_stage`)."""
    prefix: str  # the names of its steps start with it, e.g. "pretrain-"
    name: str | Callable[[str], str]  # its name, or the name as a function of the step's name
    rank: int  # the order reproduce.sh runs the stages: the plan's and time table's order
    closing: str | None = None  # a step run once after the stage's runs (a stage of its own in the tables)

    def of(self, step: str) -> str:
        return self.name(step) if callable(self.name) else self.name


STAGES: list[Stage] = []  # in the order registered; a step's stage is the first whose prefix it starts with


def register_stage(prefix: str, stage: str | Callable[[str], str], rank: int, closing: str | None = None) -> Stage:
    """Name the stage of the steps whose names start with ``prefix``.

    Args:
        prefix: the start of the steps' names (``reproduce.sh``'s ``step NAME ...``), e.g.
            ``"scan-"``; registering a prefix again replaces its stage.
        stage: the stage's name in the plan and the time table, or a function of the step's name
            that returns it (one stage per task set, say).
        rank: where the stage comes in the plan and the time table (the order ``reproduce.sh``
            runs the stages); a step of no registered stage comes after every ranked one.
        closing: the name of a step ``reproduce.sh`` runs once after the stage's runs (a
            comparison table, say), estimated and timed as a stage of its own after the others;
            ``reproduce.sh`` passes its seconds as ``--closing-seconds NAME=SECONDS``.

    Returns:
        The registered :class:`Stage`."""
    record = Stage(prefix, stage, rank, closing)
    STAGES[:] = [s for s in STAGES if s.prefix != prefix] + [record]
    return record


def _finetune_stage(step: str) -> str:
    return "finetune " + "-".join(step.split("-")[1:3])  # finetune-cxr-hetero-joint -> finetune cxr-hetero


register_stage("pretrain-", "pretrain", 0)
register_stage("finetune-", _finetune_stage, 1)
register_stage("scan-", "scan", 2)


def _stage(step: str) -> Stage | None:
    return next((s for s in STAGES if step.startswith(s.prefix)), None)


def stage_of(step: str) -> str:
    """The stage of a reproduce.sh step (:func:`register_stage`): ``pretrain-cdae`` →
    ``pretrain``, ``finetune-cxr-hetero-joint`` → ``finetune cxr-hetero``, ``scan-echo`` →
    ``scan``; a name of no registered stage is its own stage."""
    record = _stage(step)
    return record.of(step) if record else step


def _rank(step: str) -> float:
    record = _stage(step)
    return record.rank if record else math.inf


def closings() -> list[str]:
    """The registered closing steps (:func:`register_stage`), in their stages' order."""
    return [s.closing for s in sorted(STAGES, key=lambda s: s.rank) if s.closing]


def _closings_of(steps) -> list[str]:
    """The closing steps of the stages of ``steps``."""
    records = {id(r): r for r in map(_stage, steps) if r}
    return [r.closing for r in sorted(records.values(), key=lambda r: r.rank) if r.closing]


def finished(out, step: str) -> bool:
    """Whether the step's run finished (its ``results.json``, the mark reproduce.sh skips on)."""
    return (Path(out) / step / "results.json").is_file()


def recorded_seconds(out, step: str) -> float | None:
    """The seconds a finished step took: its ``step_seconds``; where that is missing (killed
    between ``results.json`` and ``step_seconds``), the time from the last attempt's start
    (``step_started``) to its ``results.json``, else from its ``args.json`` (the run's start,
    interruptions included); None for an unfinished step."""
    folder = Path(out) / step
    if not finished(out, step):
        return None
    try:
        return float((folder / STEP_SECONDS).read_text())
    except (OSError, ValueError):
        pass
    end = (folder / "results.json").stat().st_mtime
    try:
        return max(0.0, end - float((folder / STEP_STARTED).read_text()))
    except (OSError, ValueError):
        pass
    if (folder / "args.json").is_file():
        return max(0.0, end - (folder / "args.json").stat().st_mtime)
    return None


def read_times(path) -> dict | None:
    """``times.json`` (:func:`write_times`) at ``path``, or None where it is missing or not a
    time table."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(body, dict) and isinstance(body.get("stages"), list) and isinstance(body.get("steps"), list):
        return body
    return None


def _previous(out) -> dict:
    """``{step or closing step: seconds}`` of the previous run's ``times.json`` under ``out``."""
    body = read_times(Path(out) / TIMES) or {"steps": [], "stages": []}
    seconds = {s["step"]: s["seconds"] for s in body["steps"] if isinstance(s.get("seconds"), (int, float))}
    closing = closings()
    for s in body["stages"]:
        if s.get("stage") in closing and isinstance(s.get("seconds"), (int, float)):
            seconds[s["stage"]] = s["seconds"]
    return seconds


def estimates(out, steps) -> dict:
    """``{step: seconds still to spend, or None}`` for ``steps``, and for the closing step of
    each of their stages (:func:`register_stage`): 0 for a finished step, the previous ``times.json``'s seconds for the
    others, else the mean of the finished steps of its stage under ``out``, else None (no
    estimate)."""
    steps = list(steps)
    previous = _previous(out)
    by_stage = {}
    for s in steps:
        secs = recorded_seconds(out, s)
        if secs is not None:
            by_stage.setdefault(stage_of(s), []).append(secs)
    est = {}
    for s in steps:
        same_stage = by_stage.get(stage_of(s))
        if finished(out, s):
            est[s] = 0.0
        elif s in previous:
            est[s] = float(previous[s])
        else:
            est[s] = sum(same_stage) / len(same_stage) if same_stage else None
    for closing in _closings_of(steps):
        est[closing] = float(previous[closing]) if closing in previous else None
    return est


def duration(seconds: float | None) -> str:
    """``35 s``, ``4 min 10 s``, ``1 h 02 min``; ``?`` for None."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _stages(steps) -> dict:
    """``{stage: [steps]}`` in the order reproduce.sh runs the stages."""
    stages = {}
    for s in steps:
        stages.setdefault(stage_of(s), []).append(s)
    return dict(sorted(stages.items(), key=lambda kv: _rank(kv[1][0])))


def plan_lines(out, steps) -> list[str]:
    """The plan: one line per stage — its runs, how many are still to run (the others finished
    before and are skipped) and the estimate of its time (:func:`estimates`; "no estimate"
    where a run to do has none) — and the total."""
    steps = list(steps)
    est = estimates(out, steps)
    rows = []
    for stage, members in _stages(steps).items():
        todo = [s for s in members if not finished(out, s)]
        rows.append((stage, len(members), len(todo), [est[s] for s in todo]))
    for closing in _closings_of(steps):
        rows.append((closing, 1, 1, [est[closing]]))
    source = "the previous run's times.json" if read_times(Path(out) / TIMES) else "no previous times.json"
    lines = [f"plan for {out} ({_runs(len(steps))}; estimates from {source}):",
             f"  {'stage':<26} {'runs':>4} {'to run':>6}  estimate"]
    total, unknown = 0.0, 0
    for stage, runs, todo, secs in rows:
        if todo == 0:
            text = "0 s (finished before)"
        elif any(s is None for s in secs):
            text = "no estimate"
        else:
            text = duration(sum(secs))
        total += sum(s for s in secs if s is not None)
        unknown += sum(s is None for s in secs)
        lines.append(f"  {stage:<26} {runs:>4} {todo:>6}  {text}")
    if not unknown:
        text = duration(total)
    elif total:
        text = f"≥ {duration(total)} ({unknown} without estimate)"
    else:
        text = "no estimate"
    lines.append(f"  {'total':<26} {sum(r[1] for r in rows):>4} {sum(r[2] for r in rows):>6}  {text}")
    return lines


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


def eta(out, steps, done: int, elapsed: float, now: float | None = None) -> str:
    """``elapsed E; ETA R left (about HH:MM)`` after the first ``done`` of ``steps``: R sums
    the estimates of the steps after them that are not finished, and of the closing steps of
    their stages."""
    steps = list(steps)
    est = estimates(out, steps)
    rest = [est[s] for s in steps[done:] if not finished(out, s)]
    rest += [est[closing] for closing in _closings_of(steps)]
    known = sum(s for s in rest if s is not None)
    unknown = sum(s is None for s in rest)
    text = f"elapsed {duration(elapsed)}; "
    if unknown == len(rest) and rest:
        return text + f"ETA unknown ({unknown} without estimate)"
    at = time.strftime("%H:%M", time.localtime((now or time.time()) + known))
    if unknown:
        return text + f"ETA ≥ {duration(known)} left ({unknown} without estimate)"
    return text + f"ETA {duration(known)} left (about {at})"


def time_table(out, steps, closing_seconds: dict | None = None, wall_seconds: float | None = None,
               preset: str | None = None) -> dict:
    """The time table of the runs under ``out``: ``steps`` and every other step folder with a
    ``step_seconds`` file, each with its recorded seconds (:func:`recorded_seconds`; a step
    skipped because it finished before keeps its seconds), summed per stage with the stage's share
    of the total; each registered closing step's seconds (:func:`register_stage`;
    ``closing_seconds[name]``, else the previous table's) as a stage of its own.

    Returns:
        ``{"preset", "written", "wall_seconds", "total_seconds", "stages": [{"stage", "runs",
        "seconds", "share"}], "steps": [{"step", "stage", "seconds"}]}``; ``seconds`` None
        where a step has no recorded time (left out of the sums)."""
    out = Path(out)
    steps = list(dict.fromkeys(steps))
    others = sorted(p.parent.name for p in out.glob(f"*/{STEP_SECONDS}")
                    if p.parent.name not in steps and finished(out, p.parent.name))
    step_rows = [{"step": s, "stage": stage_of(s), "seconds": recorded_seconds(out, s)} for s in steps + others]
    step_rows.sort(key=lambda r: _rank(r["step"]))  # stable: reproduce.sh's order within a stage
    stages = {}
    for r in step_rows:
        entry = stages.setdefault(r["stage"], {"stage": r["stage"], "runs": 0, "seconds": 0.0})
        entry["runs"] += 1
        entry["seconds"] += r["seconds"] or 0.0
    previous = _previous(out)
    for closing in closings():
        seconds = (closing_seconds or {}).get(closing, previous.get(closing))
        if seconds is not None:
            stages[closing] = {"stage": closing, "runs": 1, "seconds": float(seconds)}
    total = sum(s["seconds"] for s in stages.values())
    for s in stages.values():
        s["share"] = s["seconds"] / total if total > 0 else 0.0
    return {"preset": preset, "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_seconds": wall_seconds,
            "total_seconds": total, "stages": list(stages.values()), "steps": step_rows}


def table_lines(times: dict) -> list[str]:
    """The time table as aligned text lines (reproduce.sh's closing lines)."""
    lines = [f"  {'stage':<26} {'runs':>4} {'seconds':>8} {'share':>6}"]
    for s in times["stages"]:
        lines.append(f"  {s['stage']:<26} {s['runs']:>4} {s['seconds']:>8.0f} {s['share']:>6.1%}")
    lines.append(f"  {'total':<26} {sum(s['runs'] for s in times['stages']):>4} {times['total_seconds']:>8.0f} "
                 f"{1 if times['total_seconds'] else 0:>6.1%}")
    missing = [r["step"] for r in times["steps"] if r["seconds"] is None]
    if missing:
        lines.append(f"  no recorded time for {len(missing)} run(s): {', '.join(missing)}")
    return lines


def write_times(out, times: dict) -> Path:
    """``out/times.json``, written atomically (a temporary file, then a rename)."""
    from data_prep.io import atomic_write_text
    path = Path(out) / TIMES
    atomic_write_text(path, json.dumps(times, indent=1, allow_nan=False) + "\n")
    return path
