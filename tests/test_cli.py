"""Issue 17, items 6 and 8: every command answers ``--help`` without loading TensorFlow, with help
text for every option and a complete description; one option convention across the commands;
no INFO flood from checkpoint saves; progress bars named by what they train; pool workers that
do not re-run the command; the package cites the papers, not files its users do not have.
(``--help`` timings are measured by hand and reported, never asserted.)"""
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("ums_rep.pretrain", "ums_rep.finetune", "ums_rep.scan", "ums_rep.report", "ums_rep.predict",
            "mt_unet.train", "mt_unet.evaluate", "data_prep.prepare", "data_prep.phantoms", "benchmarks.run",
            "benchmarks.keras_jax")  # keras_jax last: it sets KERAS_BACKEND for the process
TRAINING = ("ums_rep.pretrain", "ums_rep.finetune", "ums_rep.scan", "mt_unet.train")
HEAVY = ("tensorflow", "keras", "jax", "torch")
PLACEHOLDERS = {"LAYOUT": "rsna", "NAME": "mtunet", "N": "2", "K": "2", "S": "0", "PX": "64", "F": "0.5"}

# One interpreter runs every command's ``python -m`` path with ``--help`` (runpy, as ``-m`` does),
# records the parser each one built (argparse patched to remember it), its exit code and output,
# and which heavy modules were loaded by then.
_PROBE = r"""
import argparse, contextlib, io, json, runpy, sys, warnings
warnings.simplefilter("ignore")
seen = []
_parse = argparse.ArgumentParser.parse_known_args
def _spy(self, *a, **k):
    seen.append(self)
    return _parse(self, *a, **k)
argparse.ArgumentParser.parse_known_args = _spy
report = {}
for mod in sys.argv[1:]:
    seen.clear()
    sys.argv = [mod, "--help"]
    buf, code = io.StringIO(), None
    with contextlib.redirect_stdout(buf):
        try:
            runpy.run_module(mod, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code
    actions = {}
    if seen:
        for a in seen[0]._actions:
            key = a.option_strings[-1] if a.option_strings else a.dest
            actions[key] = {"strings": a.option_strings, "help": a.help, "nargs": a.nargs, "const": a.const,
                            "metavar": a.metavar, "choices": list(a.choices) if a.choices else None,
                            "required": a.required, "store_true": isinstance(a, argparse._StoreTrueAction)}
    report[mod] = {"code": code, "help": buf.getvalue(), "actions": actions,
                   "heavy": sorted(m for m in %r if m in sys.modules)}
print(json.dumps(report))
""" % (HEAVY,)


@pytest.fixture(scope="module")
def helps():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *COMMANDS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def test_help_answers_without_tensorflow(helps):
    report, stderr = helps
    for mod in COMMANDS:
        r = report[mod]
        assert r["code"] == 0 and r["help"].startswith("usage: "), (mod, r["code"], r["help"][:300])
        assert not r["heavy"], f"{mod} --help loaded {r['heavy']}"
    for line in ("cpu_feature_guard", "oneDNN custom operations", "absl::InitializeLog"):
        assert line not in stderr, stderr[-2000:]


def test_every_option_has_help_and_every_description_is_whole(helps):
    report, _ = helps
    for mod in COMMANDS:
        r = report[mod]
        assert r["actions"], mod
        missing = [k for k, a in r["actions"].items() if not a["help"]]
        assert not missing, f"{mod}: no help text for {missing}"
        description = r["help"].split("\n\n")[1].strip()
        assert not description.startswith(("options:", "positional")), f"{mod}: no description"
        assert description.endswith((".", ")")), f"{mod}: description cut mid-sentence: {description!r}"


def test_finetune_help_lists_the_task_sets(helps):
    from ums_rep.tasks import TASK_SETS
    text = helps[0]["ums_rep.finetune"]["help"]
    epilog = text[text.index("task sets"):]
    for name, sdef in TASK_SETS.items():
        block = epilog[epilog.index(name):]
        block = block[:block.index("\n\n")] if "\n\n" in block else block
        for spec in sdef["tasks"]:
            assert spec.task.name in block, (name, spec.task.name)
        assert sdef["train"] in block.lower() and sdef["test"] in block.lower(), block
    for words in ("Montgomery", "Kermany", "10-fold", "Doppler"):
        assert words in epilog


def test_one_option_convention(helps):
    """--data, --out, --seed, --preset {tiny,quick,paper} and --resume RUN_DIR wherever they apply."""
    report, _ = helps
    acts = {mod: r["actions"] for mod, r in report.items()}
    for mod in TRAINING:
        a = acts[mod]
        assert {"--data", "--out", "--seed", "--preset", "--resume"} <= set(a), (mod, sorted(a))
        assert a["--preset"]["choices"] == ["tiny", "quick", "paper"], mod
        assert not a["--resume"]["store_true"] and a["--resume"]["metavar"] == "RUN_DIR", mod
    assert acts["mt_unet.evaluate"]["--preset"]["choices"] == ["tiny", "quick", "paper"]
    # prepare reads one dataset: --data ROOT as everywhere, --src DIR for the dataset's own folder
    assert {"--data", "--src", "--out", "--seed"} <= set(acts["data_prep.prepare"])
    # report reads run folders: --out (defaulting like every command's) and --preset to pick runs
    assert {"--out", "--preset"} <= set(acts["ums_rep.report"])
    assert not acts["ums_rep.report"]["--out"]["required"]
    assert {"--out", "--seed"} <= set(acts["data_prep.phantoms"])


def test_readme_command_lines_parse():
    """Every ``python -m`` line of the README's command lists parses with that command's options
    (placeholders such as ``N`` or ``LAYOUT`` replaced by a value)."""
    import shlex
    from importlib import import_module
    text = (ROOT / "README.md").read_text()
    lines = re.findall(r"^python -m (\S+) (.*?)(?:\s+#.*)?$", text.replace("\\\n", " "), re.M)
    assert len(lines) >= 12
    checked = set()
    for mod, rest in lines:
        # keras_jax: importing it sets KERAS_BACKEND=jax; predict: its parser is built inside main()
        if mod not in COMMANDS or mod in ("benchmarks.keras_jax", "ums_rep.predict"):
            continue
        rest = re.sub(r"\{([^}]+)\}", lambda m: m.group(1).split(",")[0], rest)  # {a,b}: take a
        rest = re.sub(r"\[([^\]]+)\]", r"\1", rest)  # [--opt X]: give it
        rest = re.sub(r"\b(LAYOUT|NAME|N|K|S|PX|F)\b", lambda m: PLACEHOLDERS[m.group(1)], rest)
        parser = import_module(mod + (".__main__" if mod == "data_prep.phantoms" else "")).build_parser()
        try:
            parser.parse_args(shlex.split(rest))
        except SystemExit:
            pytest.fail(f"README: python -m {mod} {rest}: does not parse")
        checked.add(mod)
    assert len(checked) >= 9, checked


def test_checkpoint_saves_log_no_info_flood_and_bars_say_what_they_train(tmp_path, caplog, capsys):
    import keras
    import numpy as np
    import tensorflow as tf

    from data_prep.cli import setup_logging
    from ums_rep.strategies import FitConfig, fit
    from ums_rep.tasks import Task

    setup_logging()
    caplog.set_level(logging.INFO)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, {"clean": x}))
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(inp))
    fit("joint", {"denoise": model}, {"denoise": Task("denoise", "reconstruction")},
        {"denoise": ds.repeat().batch(8, drop_remainder=True)}, {"denoise": ds.batch(8)},
        FitConfig(epochs=2, steps_per_epoch={"denoise": 2}, checkpoint_dir=tmp_path / "ck", label="cdae pretraining"))
    assert (tmp_path / "ck").is_dir()
    flood = [r for r in caplog.records if "Sharding callback" in r.getMessage()]
    assert not flood, f"{len(flood)} records like {flood[0].getMessage()!r}"
    err = capsys.readouterr().err
    assert "cdae pretraining epoch 1/2" in err and "joint epoch" not in err


def test_setup_logging_drops_retracing_warnings(caplog):
    from data_prep.cli import setup_logging
    setup_logging()
    caplog.set_level(logging.INFO)
    tf_log = logging.getLogger("tensorflow")
    tf_log.warning("5 out of the last 5 calls to <function f> triggered tf.function retracing. Tracing is expensive")
    tf_log.warning("something else")
    assert [r.getMessage() for r in caplog.records if r.name == "tensorflow"] == ["something else"]


def test_the_package_cites_the_papers_not_files_users_lack():
    cite = re.compile(r"SPEC\.md|DESIGN\.md|\.\./shared|\bSPEC\b|\bDESIGN\b")
    found = [f"{p.relative_to(ROOT)}:{i}" for pkg in ("data_prep", "ums_rep", "mt_unet", "benchmarks")
             for p in sorted((ROOT / pkg).rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if cite.search(line)]
    assert not found, found


def test_constants_the_parsers_repeat_match_their_sources():
    """The light parsers name choices without importing TensorFlow; they must match the library."""
    from data_prep import datasets, doppler, egd, prepare, preparation, splits
    from data_prep.phantoms import __main__ as phantoms, layouts
    from mt_unet import model, tasks as mt_tasks, train
    from ums_rep import backbones, finetune, strategies, tasks
    assert finetune.ALL_STRATEGIES == tuple(strategies.REGISTRY)
    assert tasks.FLOW_CLASSES == backbones.FLOW_CLASSES == doppler.CLASSES
    assert mt_tasks.CLASSES == egd.CLASSES == mt_tasks.TASKS[mt_tasks.DISEASE].classes
    assert train.VARIANTS == model.VARIANTS and set(train.MODELS) == set(model.models())
    assert set(prepare.DATASETS) == set(preparation.DEFAULT_SPLIT) == set(datasets.DATASETS)
    assert set(prepare.SPLITS) == set(splits.SPLIT_PRESETS)
    assert phantoms.LAYOUTS == layouts.LAYOUTS


def test_prepare_takes_data_root_like_every_command(phantom_root, tmp_path, monkeypatch):
    import pandas as pd
    from data_prep import datasets
    from data_prep.io import read_image
    from data_prep.prepare import main
    from data_prep.splits import check_no_leakage
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))  # a phantom, if one were made, goes here
    assert main(["doppler", "--data", str(phantom_root), "--out", str(tmp_path / "d"), "--size", "32",
                 "--folds", "5"]) == 0
    out = tmp_path / "d"
    m = pd.read_csv(out / "manifest.csv", dtype={"patient_id": str})
    # one row per image of ROOT/doppler, with its patient and labels
    source = datasets.load("doppler", phantom_root / "doppler")
    src = phantom_root / "doppler"
    source["rel"] = [str(Path(p).relative_to(src)) for p in source.path]
    assert json.loads((out / "prepare.json").read_text())["src"] == str(src)
    assert len(m) == len(source) == 30 and m.id.is_unique
    assert {"id", "image", "mask", "patient_id", "label", "flow_type", "quality", "split", "fold",
            "source_path"} <= set(m.columns)
    merged = m.merge(source, left_on="source_path", right_on="rel", suffixes=("", "_src"), validate="1:1")
    assert len(merged) == 30
    for col in ("patient_id", "label", "flow_type", "quality"):  # (quality: unrated images empty in both)
        assert merged[col].fillna("").astype(str).tolist() == merged[f"{col}_src"].fillna("").astype(str).tolist(), col
    # the files it names exist, at --size; patient-level splits and --folds 5 folds
    for rel in list(m["image"]) + list(m["mask"]):
        assert (out / rel).is_file(), rel
    assert {read_image(out / rel).shape for rel in m["image"]} == {(32, 32)}
    assert set(m.split) == {"train", "val", "test"}
    assert set(m.fold) == set(range(5))
    check_no_leakage(m, "split")
    check_no_leakage(m, "fold")
    assert main(["doppler", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "e")]) == 1
    with pytest.raises(SystemExit) as e:  # one source, not two
        main(["doppler", "--data", str(phantom_root), "--src", str(phantom_root / "doppler")])
    assert e.value.code == 2


def test_report_preset_picks_the_runs_of_one_preset(tmp_path, caplog):
    from ums_rep.report import build_parser
    from ums_rep.reporting import collect

    def run(name, preset):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"command": "pretrain --backbone echo", "config": {"preset": preset}, "tasks": {}}))
        return tmp_path / name

    tiny, quick = run("tiny", "tiny"), run("quick", "quick")
    with pytest.raises(ValueError, match="different presets"):
        collect([tmp_path])
    caplog.set_level(logging.INFO)
    assert [folder for folder, _ in collect([tmp_path], preset="tiny")] == [tiny]
    assert f"skipped {quick}: preset quick, not tiny" in caplog.text
    with pytest.raises(ValueError, match="no .* run of preset paper"):
        collect([tmp_path], preset="paper")
    assert build_parser().parse_args(["--runs", str(tmp_path)]).out is None  # runs/report-<timestamp>/


def test_scan_resume_takes_the_run_folder(tmp_path):
    """``scan --resume RUN_DIR`` reads the scan's arguments from RUN_DIR, like every training command."""
    from ums_rep import runs
    from ums_rep.scan import build_parser
    args = build_parser().parse_args(["--resume", str(tmp_path / "scan")])
    assert args.resume == tmp_path / "scan"
    with pytest.raises(runs.RunFolderError, match="args.json: not found"):
        runs.resume_args(args, "ums_rep.scan")
    args = build_parser().parse_args(["--model", "cdae", "--round-limit", "3", "--out", str(tmp_path / "scan")])
    args = runs.resume_args(args, "ums_rep.scan")
    runs.save_args(args, runs.run_dir(args.out, "scan-cdae", "ums_rep.scan"))
    back = runs.resume_args(build_parser().parse_args(["--resume", str(tmp_path / "scan")]), "ums_rep.scan")
    assert (back.model, back.round_limit, back.out) == ("cdae", 3, tmp_path / "scan")


_POOL_PROBE = """
import os
if __name__ == "__mp_main__":  # a spawned worker re-running the command module
    open(os.environ["MARK"], "a").write("re-imported\\n")
from data_prep.cli import worker_pool
if __name__ == "__main__":
    with worker_pool(2) as pool:
        print(sum(pool.map(abs, [-1, -2, -3])))
    print(__spec__.name, "__file__" in globals())
"""


def test_pool_workers_do_not_rerun_the_command(tmp_path):
    """prepare's and the phantoms' workers skip the ``python -m`` module that started them (for a
    training command: TensorFlow, seconds per worker and its start-up lines again)."""
    (tmp_path / "probe_cmd.py").write_text(_POOL_PROBE)
    env = {**os.environ, "MARK": str(tmp_path / "mark"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "probe_cmd"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["6", "probe_cmd", "True"], out.stderr[-2000:]
    assert not (tmp_path / "mark").exists()


def test_run_cli_turns_the_errors_it_names_into_one_line_and_their_exit_status(caplog, monkeypatch):
    """Every command's main: a named error is one logged line and its status; others propagate."""
    import argparse

    from data_prep.cli import INPUT_ERRORS, run_cli
    from mt_unet import train
    from ums_rep.strategies import NonFiniteLossError

    def parser():
        p = argparse.ArgumentParser()
        p.add_argument("-v", "--verbose", action="store_true")
        return p

    def raising(error):
        def run(args):
            raise error
        return run

    log = logging.getLogger("test.run_cli")
    assert run_cli(parser, lambda args: None, [], log) == 0
    assert run_cli(parser, lambda args: 3, [], log) == 3
    with caplog.at_level(logging.ERROR, logger="test.run_cli"):
        assert run_cli(parser, raising(FileNotFoundError("no such file: x.png")), [], log) == 1
    assert caplog.records[-1].getMessage() == "no such file: x.png"
    assert run_cli(parser, raising(NonFiniteLossError("nan")), [], log, {**INPUT_ERRORS, NonFiniteLossError: 3}) == 3
    with pytest.raises(NonFiniteLossError):
        run_cli(parser, raising(NonFiniteLossError("nan")), [], log)
    # mt_unet.train: a non-finite loss ends the command with status 3
    monkeypatch.setattr(train, "run", raising(NonFiniteLossError("non-finite saliency loss at epoch 2")))
    assert train.main(["--preset", "tiny", "--no-progress"]) == 3


@pytest.mark.parametrize("command, options", [("ums_rep.pretrain", "ums_rep.pretraining:PretrainOptions"),
                                              ("ums_rep.finetune", "ums_rep.experiment:FinetuneOptions"),
                                              ("ums_rep.scan", "ums_rep.scanning:ScanOptions"),
                                              ("mt_unet.train", "mt_unet.experiment:MtUnetOptions")])
def test_each_training_shell_hands_its_library_typed_options_with_the_parsers_defaults(command, options):
    """A command is a shell: its parser's values become the library's options dataclass. Every
    option of the parser that the library reads is a field (none dropped on the way), and the
    dataclass's defaults are the parser's (a library caller gets what the command line gets)."""
    import dataclasses
    import importlib

    from ums_rep.options import options_from
    parser = importlib.import_module(command).build_parser()
    module, name = options.split(":")
    cls = getattr(importlib.import_module(module), name)
    fields = {f.name for f in dataclasses.fields(cls)}
    shell_only = {"verbose", "compare", "mix_presets", "merge", "help"}
    assert {a.dest for a in parser._actions} - shell_only <= fields
    parsed = options_from(cls, parser.parse_args([]))
    assert parsed == cls(), [(f, getattr(parsed, f), getattr(cls(), f)) for f in fields
                            if getattr(parsed, f) != getattr(cls(), f)]


def test_json_options_are_parsed_by_the_command_line():
    """``--weights``/``--ratio`` reach the library as dicts; text that is not a JSON object is a
    usage error naming the option."""
    from ums_rep.finetune import build_parser
    args = build_parser().parse_args(["--weights", '{"lung_seg": 1, "abnormal": 0.5}', "--ratio", '{"lung_seg": 2}'])
    assert args.weights == {"lung_seg": 1, "abnormal": 0.5} and args.ratio == {"lung_seg": 2}
    for bad in ("{lung_seg: 1}", "[1, 2]"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--weights", bad])
