"""reproduce.sh: its plan, progress lines and time table (``ums_rep.reproduce_plan``, MT-UNet's stage
registered by ``mt_unet.plugin``; the report's
"How long each part took"), one run per --out (a lock), and a run killed twice at random points
(SIGKILL to its whole process group) that, rerun with the same arguments, ends with the same
results, MT-UNet comparison table and claims.json as an uninterrupted run.

The end-to-end tests run the tiny preset restricted to one MT-UNet run (REPRODUCE_ONLY_STEPS):
about 30 s for a whole run on 2 quiet cores, most of it TensorFlow starting in the training run and
in the comparison table. ``REPRODUCE_KILL_SEED`` replays the kill points of a failed run."""
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mt_unet.plugin import COMPARE
from ums_rep import plugins, reproduce_plan as rp

plugins.load()  # MT-UNet's stage and its comparison table, as the command loads them

ROOT = Path(__file__).resolve().parents[1]
STEP = "mt_unet-mtunet-full-mtl3"


def table_rows(markdown: str) -> list:
    """The cells of every Markdown table row (as tests.helpers.table_rows, without its TensorFlow import)."""
    return [[c.strip() for c in line.strip()[1:-1].split("|")] for line in markdown.splitlines()
            if line.strip().startswith("|") and set(line.strip()) - set("|:- ")]


def _env(cache: Path) -> dict:
    return {**os.environ, "REPRODUCE_ONLY_STEPS": STEP, "UMS_REP_CACHE": str(cache), "PYTHON": sys.executable,
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(out: Path, env: dict) -> subprocess.Popen:
    """reproduce.sh --preset tiny --out OUT in a process group of its own (so that SIGKILL reaches
    every command it started), stdout and stderr together."""
    return subprocess.Popen([str(ROOT / "reproduce.sh"), "--preset", "tiny", "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_unlocked(out: Path, timeout: float = 20) -> None:
    """Until OUT's lock is free: a killed group's last processes may take a moment to go."""
    deadline = time.monotonic() + timeout
    with open(out / "reproduce.lock", "a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{out}/reproduce.lock still held {timeout} s after the run was killed")
                time.sleep(0.05)


def _comparable_results(step_dir: Path) -> dict:
    """results.json without the seconds (a resumed run's differ): metrics, spread, per-seed
    metrics, epochs, best epoch and the weighting's final state, parameters."""
    body = json.loads((step_dir / "results.json").read_text())
    tasks = {}
    for name, t in body["tasks"].items():
        tasks[name] = {"metrics": t["metrics"], "std": t["std"], "params": t["trainable_params"],
                       "per_seed": [{k: v for k, v in s.items() if k != "train_seconds"} for s in t["per_seed"]]}
    return {"command": body["command"], "config": body["config"], "tasks": tasks}


def _compare_without_seconds(path: Path) -> list:
    rows = table_rows(path.read_text())
    col = rows[0].index("train s")
    return [r[:col] + r[col + 1:] for r in rows]


def _headings(report: Path) -> list:
    return [line for line in report.read_text().splitlines() if line.startswith("#")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, with a second reproduce.sh started into the same OUT while it runs."""
    root = tmp_path_factory.mktemp("reproduce")
    out, env = root / "uninterrupted", _env(root / "cache")
    t0 = time.monotonic()
    proc = _start(out, env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("plan for "):  # the lock is taken before the plan
            break
    second = subprocess.run([str(ROOT / "reproduce.sh"), "--preset", "tiny", "--out", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    lines += proc.stdout.readlines()
    proc.wait()
    output = "".join(lines)
    assert proc.returncode == 0, output[-3000:]
    return {"root": root, "out": out, "env": env, "output": output, "seconds": time.monotonic() - t0,
            "second": second}


def test_a_second_reproduce_into_the_same_out_refuses_in_one_line(reference):
    second, out = reference["second"], reference["out"]
    said = (second.stdout + second.stderr).strip().splitlines()
    assert second.returncode == 1 and len(said) == 1, said
    assert str(out) in said[0] and "in use by another reproduce.sh" in said[0]
    # the running one was not disturbed: it finished, and the refused one wrote nothing into its log
    assert "in use" not in (out / "reproduce.log").read_text()


def test_a_run_prints_its_plan_progress_and_time_table(reference):
    out, lines = reference["out"], reference["output"].splitlines()
    plan = next(i for i, line in enumerate(lines) if line.startswith("plan for "))
    run = next(i for i, line in enumerate(lines) if f"run {STEP}" in line)
    assert plan < run, "the plan comes before the first run"
    assert "no previous times.json" in lines[plan]
    assert any(line.split()[:3] == ["MT-UNet", "1", "1"] and "no estimate" in line for line in lines[plan:run])
    done = next(line for line in lines if f"[1/1] done {STEP} in " in line)
    assert "elapsed" in done and "ETA" in done

    times = rp.read_times(out / "times.json")
    assert [(s["stage"], s["runs"]) for s in times["stages"]] == [("MT-UNet", 1), (COMPARE, 1)]
    assert times["steps"][0]["step"] == STEP
    assert times["steps"][0]["seconds"] == float((out / STEP / "step_seconds").read_text()) > 0
    assert sum(s["share"] for s in times["stages"]) == pytest.approx(1)
    assert not list(out.glob(".times.json*")), "times.json is written through a temporary file and a rename"

    md = (out / "report" / "report.md").read_text()
    assert "## How long each part took" in md
    rows = {r[0]: r for r in table_rows(md.split("## How long each part took")[1])}
    assert rows["MT-UNet"][1] == "1" and rows["MT-UNet"][2] == f"{times['stages'][0]['seconds']:.0f}"
    assert rows["**total**"][3] == "100.0%"
    assert "How long each part took" in (out / "report" / "report.html").read_text()


def test_killed_twice_at_random_points_a_rerun_ends_like_an_uninterrupted_run(reference):
    """SIGKILL (the whole process group) at two random points, then the same command to the end:
    the same results, MT-UNet comparison table (seconds aside), claims.json and report sections
    as the uninterrupted run's; the time table still has the run's seconds."""
    seed = int(os.environ.get("REPRODUCE_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    out, env, whole = reference["root"] / "killed", reference["env"], reference["seconds"]
    # attempt 1 may die anywhere in a whole run; a later attempt has at least the comparison table
    # and the report to do (about 40 % of a whole run), so it is killed within the first 35 %
    kills = [rng.uniform(0.05, 0.9) * whole, rng.uniform(0.05, 0.35) * whole]
    context = f"REPRODUCE_KILL_SEED={seed}, kills after {[round(k, 1) for k in kills]} s of a {whole:.0f} s run"
    landed, outputs = 0, []
    for after in kills:
        proc = _start(out, env)
        try:
            proc.wait(timeout=after)  # it finished before its kill: the rerun below still has to agree
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            landed += 1
        outputs.append(proc.stdout.read())
        _wait_unlocked(out)
    context += f", {landed} landed"
    print(context)  # shown with -s, and on failure
    assert landed >= 1, f"no kill landed ({context})"
    proc = _start(out, env)
    final, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{context}\n{final[-3000:]}"

    ref = reference["out"]
    assert _comparable_results(out / STEP) == _comparable_results(ref / STEP), context
    assert _compare_without_seconds(out / "compare.md") == _compare_without_seconds(ref / "compare.md"), context
    claims = [json.loads((d / "report" / "claims.json").read_text()) for d in (out, ref)]
    assert claims[0] == claims[1], context
    assert _headings(out / "report" / "report.md") == _headings(ref / "report" / "report.md"), context
    times = rp.read_times(out / "times.json")
    assert [(s["stage"], s["runs"]) for s in times["stages"]] == [("MT-UNet", 1), (COMPARE, 1)], context
    assert times["steps"][0]["seconds"] > 0, context


# ----- the plan, the ETA and the time table on made-up run folders (no training) -----

def _finished(out: Path, step: str, seconds=None) -> None:
    (out / step).mkdir(parents=True)
    (out / step / "args.json").write_text("{}")
    (out / step / "results.json").write_text("{}")
    if seconds is not None:
        (out / step / rp.STEP_SECONDS).write_text(f"{seconds}\n")


STEPS = ["pretrain-cdae", "pretrain-echo", "finetune-cxr-hetero-independent", "finetune-cxr-hetero-joint",
         "scan-echo", "mt_unet-mtunet-full-mtl3", "mt_unet-unetc-full-mtl3"]


def test_stages_are_named_after_the_steps():
    assert [rp.stage_of(s) for s in STEPS] == ["pretrain", "pretrain", "finetune cxr-hetero", "finetune cxr-hetero",
                                              "scan", "MT-UNet", "MT-UNet"]


def test_the_time_table_keeps_the_seconds_of_steps_finished_before(tmp_path):
    for step, secs in zip(STEPS, (10, 20, 30, 40, 50, 60, 70)):
        _finished(tmp_path, step, secs)
    first = rp.time_table(tmp_path, STEPS, closing_seconds={COMPARE: 5}, wall_seconds=300)
    rp.write_times(tmp_path, first)
    # a rerun that skips every step (and one without a step_seconds: killed after its results.json)
    (tmp_path / "scan-echo" / rp.STEP_SECONDS).unlink()
    (tmp_path / "finetune-cxr-hetero-joint" / rp.STEP_SECONDS).unlink()
    ended = (tmp_path / "finetune-cxr-hetero-joint" / "results.json").stat().st_mtime
    (tmp_path / "finetune-cxr-hetero-joint" / rp.STEP_STARTED).write_text(f"{ended - 12:.0f}\n")
    again = rp.time_table(tmp_path, STEPS)
    stages = {s["stage"]: s for s in again["stages"]}
    assert stages["pretrain"]["seconds"] == 30 and stages["pretrain"]["runs"] == 2
    assert stages["MT-UNet"]["seconds"] == 130
    assert stages[COMPARE]["seconds"] == 5, "the comparison's seconds come from the previous table"
    # no step_seconds: from the last attempt's start (step_started), else from args.json, to results.json
    assert stages["finetune cxr-hetero"]["seconds"] == pytest.approx(30 + 12, abs=1)
    assert stages["scan"]["seconds"] == pytest.approx(0, abs=1)
    assert list(stages) == ["pretrain", "finetune cxr-hetero", "scan", "MT-UNet", COMPARE]
    assert sum(s["share"] for s in again["stages"]) == pytest.approx(1)
    # --only mt_unet after a whole run: the table still covers every step under OUT
    only_mt = rp.time_table(tmp_path, STEPS[-2:], closing_seconds={COMPARE: 6})
    assert [s["stage"] for s in only_mt["stages"]][:2] == ["pretrain", "finetune cxr-hetero"]
    text = "\n".join(rp.table_lines(again))
    assert "total" in text and "100.0%" in text


def test_the_plan_estimates_from_the_previous_time_table(tmp_path):
    assert any("no estimate" in line for line in rp.plan_lines(tmp_path, STEPS))
    for step, secs in zip(STEPS, (10, 20, 30, 40, 50, 60, 70)):
        _finished(tmp_path, step, secs)
    rp.write_times(tmp_path, rp.time_table(tmp_path, STEPS, closing_seconds={COMPARE: 5}))
    # a fresh start into the same OUT: nothing finished, every step estimated from times.json
    for step in STEPS[2:]:
        (tmp_path / step / "results.json").unlink()
    plan = rp.plan_lines(tmp_path, STEPS + ["finetune-cxr-hetero-baseline"])
    assert "the previous run's times.json" in plan[0]
    row = {line[2:28].strip(): line[28:].split() for line in plan[2:]}
    assert row["pretrain"] == ["2", "0", "0", "s", "(finished", "before)"]
    # the baseline is not in times.json: the mean of its stage's finished steps... none finished, so none
    assert row["finetune cxr-hetero"] == ["3", "3", "no", "estimate"]
    assert row["MT-UNet"] == ["2", "2", "2", "min", "10", "s"] and row[COMPARE] == ["1", "1", "5", "s"]
    assert "≥" in plan[-1] and "1 without estimate" in plan[-1]
    # the ETA after the two pretraining steps: the rest of the steps with an estimate, and the comparison
    eta = rp.eta(tmp_path, STEPS + ["finetune-cxr-hetero-baseline"], done=2, elapsed=61)
    assert eta.startswith("elapsed 1 min 01 s; ETA ≥ 4 min 15 s left (1 without estimate)"), eta
    assert "about" in rp.eta(tmp_path, STEPS, done=2, elapsed=1)
    # once a step of its stage has finished (40 s), the baseline is estimated by their mean
    (tmp_path / "finetune-cxr-hetero-joint" / "results.json").write_text("{}")
    plan = rp.plan_lines(tmp_path, STEPS + ["finetune-cxr-hetero-baseline"])
    row = {line[2:28].strip(): line[28:].split() for line in plan[2:]}
    assert row["finetune cxr-hetero"] == ["3", "2", "1", "min", "10", "s"], plan


def test_the_report_shows_the_time_table(tmp_path):
    from ums_rep.reporting import time_tables
    assert time_tables([tmp_path]) == []
    for broken in ("not json", '{"stages": [{"stage": "x"}], "steps": []}'):
        (tmp_path / "times.json").write_text(broken)
        assert time_tables([tmp_path]) == []
    _finished(tmp_path, "pretrain-cdae", 30)
    rp.write_times(tmp_path, rp.time_table(tmp_path, ["pretrain-cdae"], closing_seconds={COMPARE: 10},
                                           wall_seconds=41, preset="tiny"))
    md = "\n".join(time_tables([tmp_path]))
    assert md.startswith("## How long each part took")
    assert ["pretrain", "1", "30", "75.0%"] in table_rows(md) and ["**total**", "2", "40", "100.0%"] in table_rows(md)
    assert "41 s" in md


def test_reproduce_refuses_a_selection_without_steps(tmp_path):
    env = {**os.environ, "REPRODUCE_ONLY_STEPS": "no-such-step", "PYTHON": sys.executable}
    r = subprocess.run([str(ROOT / "reproduce.sh"), "--preset", "tiny", "--out", str(tmp_path / "o")], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "no step to run" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "REPRODUCE_ONLY_STEPS" in subprocess.run([str(ROOT / "reproduce.sh"), "--help"], capture_output=True,
                                                    text=True, check=True).stdout
