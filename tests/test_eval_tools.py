"""Evaluation tools on a tiny trained run: offline metrics (+ oracles), tools/evaluate.py end to end,
periodic evaluation during training, and the ablation sweep (train, evaluate, compare, skip, resume).

One tiny model (testing.TINY, widened to the tabletop datasets' 14-D actions) trains on the tiny generated
tabletop data; subprocesses share one persistent compilation cache, so later runs compile little.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from data_fixtures import tabletop_dir  # noqa: F401  (fixture)
from PIL import Image

from vla_jax.train import testing

ROOT = str(testing.REPO)
STEPS = 8
EVAL_FLAGS = ["--episodes=1", "--tasks=pick", "--embodiments=single_arm", "--splits=train,heldout_combo",
              "--max_steps=8", "--image_size=32", "--num_envs=4", "--offline_batches=1", "--grounding_scenes=3"]


def overrides(data_dir: str, **extra) -> dict:
    o = {**testing.TINY, "model.max_action_dim": 14, "model.max_state_dim": 14, "model.max_text_len": 24,
         "model.addons": ("conv_stem(channels=(8, 8))", "location_tokens(grid=8, first_id=4)", "keypoints(num=4)",
                          "prefix_readout"),  # the keypoint loss and its probe run too
         "num_steps": STEPS, "checkpoint.every": 4, "data.data_dir": data_dir, "data.num_workers": 0}
    o.update(extra)
    return o


def run(cmd, timeout=300) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=ROOT, env=testing.env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    return out


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flat(params) -> dict:
    from vla_jax.export import to_torch

    return to_torch.flatten_params(params)


@pytest.fixture(scope="module")
def trained(tabletop_dir, tmp_path_factory):  # noqa: F811
    """A tiny run trained with periodic evaluation on (every 4 steps), checkpoints at 4 and 8."""
    workdir = str(tmp_path_factory.mktemp("run") / "tiny")
    o = overrides(tabletop_dir, **{"eval.every": 4, "eval.episodes": 1, "eval.families": "pick",
                                   "eval.embodiments": "single_arm", "eval.max_steps": 8, "eval.image_size": 32,
                                   "eval.num_envs": 4, "eval.offline_batches": 1})
    run([sys.executable, "-m", "vla_jax.train", f"--workdir={workdir}", "--config=configs/pretrain.py:debug"]
        + [f"--config.{k}={v}" for k, v in o.items()])
    return workdir


@pytest.fixture(scope="module")
def sweep(tabletop_dir, tmp_path_factory):  # noqa: F811
    """A 2-variant tiny sweep (web weight 0 and the default 0.2), run once: (sweep file, out dir, stdout)."""
    root = tmp_path_factory.mktemp("sweep")
    path = root / "tiny_sweep.py"
    path.write_text(f'''import ml_collections

from vla_jax.config import dotted

def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.base = "configs/pretrain.py:debug"
    c.overrides = dotted({overrides(tabletop_dir)!r})
    c.variants = dotted({{"web_0": dotted({{"data.mixture.tabletop_web_vl": 0.0}}),
                          "web_0.2": dotted({{"data.mixture.tabletop_web_vl": 0.2}})}})
    c.varied = "data.mixture.tabletop_web_vl"
    c.eval = dict(episodes=1, families="pick", embodiments="single_arm", splits="train,heldout_combo",
                  max_steps=8, image_size=32, offline_batches=1, num_envs=4)
    return c
''')
    out = str(root / "out")
    res = run([sys.executable, "tools/ablate.py", f"--config={path}", f"--out={out}"], timeout=600)
    return str(path), out, res.stdout


# ---------------------------------------------------------------------------------------------- offline
def test_offline_metrics_on_a_trained_checkpoint(trained):
    import jax
    import ml_collections

    from vla_jax.eval.offline import OfflineEvaluator, flatten, format_table
    from vla_jax.train.checkpoint import load_params
    from vla_jax.models.vla import VLA, make_config

    ck = load_params(trained)
    config = ml_collections.ConfigDict(ck.config)
    ev = OfflineEvaluator(config, VLA(make_config(config.model)), max_batches=1, batch_size=8)
    m = ev(ck.params)
    assert set(m) == {"tabletop_single_arm", "tabletop_bimanual", "tabletop_web_vl"}
    for name in ("tabletop_single_arm", "tabletop_bimanual"):
        r = m[name]
        assert r["kind"] == "robot" and r["examples"] == 8 and r["action_elements"] > 0
        for key in ("loss/flow", "action_mse", "action_l1", "action_mse_normalized", "action_mse_se"):
            assert np.isfinite(r[key]) and r[key] >= 0, (name, key, r[key])
        assert r["action_mse"] > 0 and r["action_l1"] > 0  # an 8-step model is not perfect
        assert len(r["action_mse_per_dim"]) == (7 if name == "tabletop_single_arm" else 14)
        assert "token_accuracy" not in r  # flow head
    web = m["tabletop_web_vl"]
    assert web["kind"] == "web" and web["answers"] > 0 and 0.0 <= web["exact_match"] <= 1.0
    assert np.isfinite(web["loss/text"]) and web["loss/text"] > 0
    assert web["samples"] and all(s["reference"] for s in web["samples"])
    assert ev(ck.params) == m  # deterministic (same examples, noise and loss rng)
    assert all(np.isfinite(r["image_reliance"]) for r in m.values())
    cameras = {name: sorted(k for k in r if k.startswith("camera_reliance/")) for name, r in m.items()}
    slots = lambda n: [f"camera_reliance/{k}" for k in range(min(n, config.model.num_cameras))]  # noqa: E731
    assert cameras == {"tabletop_single_arm": slots(2), "tabletop_bimanual": slots(3), "tabletop_web_vl": slots(1)}
    assert m["tabletop_web_vl"]["camera_reliance/0"] == m["tabletop_web_vl"]["image_reliance"]  # its only view
    assert {name for name, r in m.items() if np.isfinite(r.get("instruction_reliance", np.nan))} == {
        "tabletop_single_arm", "tabletop_bimanual"}  # robot data only (a web prompt belongs to its answer)
    # a blind model (image tokens and keypoints projected to zero) does not care whose images it gets
    blind = jax.tree_util.tree_map(np.array, ck.params)
    for leaf in ("w", "b"):
        blind["params"]["img_proj"][leaf][...] = 0.0
    blind["params"]["keypoints"]["readout"]["w"][...] = 0.0  # the keypoints' path into the action expert
    blind_metrics = ev(blind)
    assert all(v == 0.0 for r in blind_metrics.values() for k, v in r.items() if k.startswith(("image", "camera")))
    assert all(r["instruction_reliance"] != 0.0 for r in blind_metrics.values() if r["kind"] == "robot")
    scalars = flatten(m, prefix="eval")
    assert "eval/tabletop_single_arm/action_mse" in scalars and "eval/tabletop_web_vl/exact_match" in scalars
    assert all(isinstance(v, float) for v in scalars.values())
    assert "| tabletop_web_vl | web |" in format_table(m)

    # oracles: the exact target chunk / the reference answer give MSE 0 and exact match 1 ...
    def answers(batch, extra=None):
        out = np.zeros((len(batch["tokens"]), 24), np.int32)
        for i in range(len(out)):
            ids = batch["tokens"][i][batch["token_mask"][i] & batch["token_ar"][i]].tolist()  # ends with eos
            if extra is not None:
                ids = ids[:-1] + [extra] + ids[-1:]
            out[i, : len(ids)] = ids
        return out

    oracle = OfflineEvaluator(config, VLA(make_config(config.model)), max_batches=1, batch_size=8,
                              robot_fn=lambda p, b, r: b["actions"], text_fn=lambda p, b: answers(b))
    o = oracle(ck.params)
    assert o["tabletop_web_vl"]["exact_match"] == 1.0
    grounded = [n for n in ("tabletop_single_arm", "tabletop_bimanual") if "exact_match" in o[n]]
    assert grounded and all(o[n]["exact_match"] == 1.0 and o[n]["answers"] >= 1 for n in grounded)  # grounding
    assert o["tabletop_single_arm"]["action_mse"] == 0.0 and o["tabletop_bimanual"]["action_l1"] == 0.0
    assert o["tabletop_single_arm"]["chunk_translation_error"] == 0.0 == o["tabletop_bimanual"]["chunk_translation_error"]
    assert all(m[n]["chunk_translation_error"] > 0 for n in ("tabletop_single_arm", "tabletop_bimanual"))
    assert o["tabletop_single_arm"]["loss/flow"] == m["tabletop_single_arm"]["loss/flow"]  # same val loss
    # ... a wrong word in every answer gives 0, and a +0.1 shift of normalized actions gives exactly the
    # un-normalized error of 0.1 (per dimension, through the dataset's statistics)
    from vla_jax.data.policy_io import make_policy_io

    word = ev.tokenizer.encode("red")[-1]
    shifted = OfflineEvaluator(config, VLA(make_config(config.model)), max_batches=1, batch_size=8,
                               robot_fn=lambda p, b, r: b["actions"] + 0.1 * b["action_dim_mask"][:, None, :],
                               text_fn=lambda p, b: answers(b, extra=word))
    s = shifted(ck.params)
    assert s["tabletop_web_vl"]["exact_match"] == 0.0 and all(s[n]["exact_match"] == 0.0 for n in grounded)
    arm = s["tabletop_single_arm"]
    assert arm["action_mse_normalized"] == pytest.approx(0.01, rel=1e-4)
    norm = make_policy_io(config, "tabletop_single_arm").action_norm
    per_dim = np.square(norm.inverse(np.full(7, 0.1, np.float32)) - norm.inverse(np.zeros(7, np.float32)))
    np.testing.assert_allclose(arm["action_mse_per_dim"], per_dim, rtol=1e-3, atol=1e-9)
    assert arm["action_mse"] == pytest.approx(per_dim.mean(), rel=1e-3)


def test_discrete_token_accuracy_counts_real_elements_only():
    from vla_jax.eval.offline import _Accumulator, _Split
    from vla_jax.models import action_tokens

    class Identity:
        def inverse(self, x):
            return np.asarray(x, np.float32)

    class Info:
        action_norm, action_dim, translation_dims = Identity(), 3, ((0, 1, 2),)

    rng = np.random.default_rng(0)
    target = np.zeros((4, 2, 5), np.float32)
    target[..., :3] = rng.uniform(-0.9, 0.9, (4, 2, 3))
    steps = np.array([[1, 1], [1, 0], [1, 1], [1, 1]], bool)
    batch = {"actions": target, "action_step_mask": steps}
    pred = target.copy()
    pred[0, 0, 0] += 2 * action_tokens.BIN_WIDTH  # one wrong token on a real element
    pred[1, 1, :] += 0.5  # wrong, but on a padded chunk step: not counted
    pred[:, :, 3:] = 1.0  # padded dims: not counted
    acc = _Accumulator(_Split("x", "robot", [], [4], Info(), 4), "discrete", None)
    acc.add_actions(pred, batch, 4)
    r = acc.result()
    assert r["action_elements"] == 7 * 3
    assert r["token_accuracy"] == pytest.approx(20 / 21)
    assert r["action_mse"] == pytest.approx((2 * action_tokens.BIN_WIDTH) ** 2 / 21, rel=1e-4)
    # where the chunk takes the arm: only example 0 ends elsewhere (by the one wrong element)
    assert r["chunk_translation_error"] == pytest.approx(2 * action_tokens.BIN_WIDTH / 4, rel=1e-4)


# ---------------------------------------------------------------------------------------------- tools/evaluate.py
def test_evaluate_tool_writes_report_and_is_deterministic(trained, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        res = run([sys.executable, "tools/evaluate.py", f"--workdir={trained}", f"--out={out}", "--baselines"]
                  + EVAL_FLAGS)
        assert "heldout_combo" in res.stdout and "expert" in res.stdout and "tabletop_web_vl" in res.stdout
        outs.append(out)
    for f in ("results.json", "summary.md", "summary.png", "filmstrip_model.png", "rollouts_model.gif"):
        assert os.path.isfile(os.path.join(outs[0], f)), f
    for f in ("summary.png", "filmstrip_model.png"):
        with Image.open(os.path.join(outs[0], f)) as im:
            assert im.format == "PNG" and np.asarray(im.convert("L")).std() > 5
    with Image.open(os.path.join(outs[0], "rollouts_model.gif")) as im:
        assert im.format == "GIF" and im.n_frames > 1

    def load(out):
        d = json.load(open(os.path.join(out, "results.json")))
        for p in d["policies"].values():
            p.pop("timing")
        return d

    a, b = load(outs[0]), load(outs[1])
    assert a["policies"] == b["policies"] and a["offline"] == b["offline"]  # identical runs
    assert a["grounding"] == b["grounding"]
    assert set(a["grounding"]["single_arm"]) == {"train", "heldout_combo"}  # one probe per evaluated split
    g = a["grounding"]["single_arm"]["train"]
    assert set(g) == {"pick", "all"} and g["pick"]["n"] == 3
    assert all(0.0 <= m["exact"] <= m["near"] <= 1.0 and 0.0 <= m["other"] <= 1.0 for m in g.values())
    assert all(0.0 <= m["keypoint_error"] <= 1.5 for m in g.values())  # image widths; the diagonal is 1.41
    assert "First-frame grounding" in open(os.path.join(outs[0], "summary.md")).read()
    assert set(a["policies"]) == {"model", "expert", "random", "mean"}
    assert a["checkpoint"]["step"] == STEPS and a["policies"]["model"]["overall"]["n"] == 2
    assert {e["split"] for e in a["policies"]["model"]["episodes"]} == {"train", "heldout_combo"}
    assert a["policies"]["expert"]["overall"]["successes"] >= 1  # the ceiling does something
    assert np.isfinite(a["offline"]["tabletop_single_arm"]["action_mse"])
    assert "Offline metrics" in open(os.path.join(outs[0], "summary.md")).read()


def test_evaluate_tool_one_line_errors(trained, tmp_path, capsys):
    tool = load_tool("evaluate")
    assert tool.main([f"--workdir={trained}", "--step=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "step 5 does not exist" in err and "4, 8" in err
    os.makedirs(tmp_path / "empty")
    assert tool.main([f"--workdir={tmp_path / 'empty'}"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert tool.main([f"--workdir={trained}", "--tasks=fly"]) == 2
    assert "unknown 'fly'" in capsys.readouterr().err
    assert tool.main([f"--workdir={trained}", "--num_samples=0"]) == 2
    assert "--num_samples=0 must be >= 1" in capsys.readouterr().err


def test_eval_settings_validation_errors_are_one_line():
    from vla_jax.eval.run import EvalError, EvalSettings

    EvalSettings().validate()
    for field, value, message in (("families", "fly", "--tasks=fly: unknown 'fly'"),
                                  ("splits", "train,nope", "--splits=train,nope: unknown 'nope'"),
                                  ("embodiments", "octopus", "--embodiments=octopus: unknown 'octopus'"),
                                  ("episodes", 0, "--episodes=0 must be >= 1"),
                                  ("execute_steps", 0, "--execute_steps=0 must be >= 1"),
                                  ("num_samples", 0, "--num_samples=0 must be >= 1"),
                                  ("num_envs", 0, "--num_envs=0 must be >= 1")):
        with pytest.raises(EvalError) as err:
            EvalSettings(**{field: value}).validate()
        assert str(err.value).startswith(message) and "\n" not in str(err.value), (field, str(err.value))


def test_evaluate_tool_bad_num_envs_writes_nothing(tmp_path, capsys):
    tool = load_tool("evaluate")
    os.makedirs(tmp_path / "run")
    assert tool.main([f"--workdir={tmp_path / 'run'}", "--num_envs=0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --num_envs=0 must be >= 1"
    assert os.listdir(tmp_path / "run") == []


def test_eval_settings_from_config_values():
    from vla_jax.config import load_config
    from vla_jax.eval.run import EvalSettings

    assert EvalSettings.from_config({"every": 5, "episodes": "3", "execute_steps": 0, "max_steps": 7, "ema": 1}) == \
        EvalSettings(episodes=3, execute_steps=None, max_steps=7, ema=True)
    e = load_config("configs/pretrain.py:debug").eval
    s = EvalSettings.from_config(e)
    assert (s.episodes, s.splits, s.offline_batches, s.max_steps) == (int(e.episodes), e.splits,
                                                                      int(e.offline_batches), None)


# ---------------------------------------------------------------------------------------------- training hook
def test_periodic_eval_is_logged_and_leaves_training_unchanged(trained, sweep):
    from vla_jax.train.checkpoint import load_params
    from vla_jax.train.metrics import read_metrics

    rows = [r for r in read_metrics(trained) if "eval/success" in r]
    assert [r["step"] for r in rows] == [4, 8]
    for r in rows:
        assert 0.0 <= r["eval/success"] <= 1.0 and "eval/success/single_arm/train" in r
        assert r["eval/tabletop_single_arm/action_mse"] > 0 and "eval/tabletop_web_vl/exact_match" in r
    # the sweep's web_0.2 variant is the same training config with evaluation off: identical parameters
    _, out, _ = sweep
    with_eval, without = flat(load_params(trained, STEPS).params), flat(load_params(os.path.join(out, "web_0.2"),
                                                                                      STEPS).params)
    assert sorted(with_eval) == sorted(without)
    assert all(np.array_equal(with_eval[k], without[k]) for k in with_eval)


def test_periodic_eval_config_errors_are_one_line():
    from vla_jax.config import ConfigError, load_config
    from vla_jax.eval.run import PeriodicEvaluator

    for key, value, message in (("eval.num_samples", 0, r"config\.eval\.num_samples=0 must be >= 1"),
                                ("eval.every", -1, r"config\.eval\.every, config\.eval\.episodes"),
                                ("eval.splits", "train,nope", r"config\.eval\.splits")):
        with pytest.raises(ConfigError, match=message):
            PeriodicEvaluator(load_config("configs/pretrain.py:debug", {key: value}), model=None, enabled=False)


# ---------------------------------------------------------------------------------------------- ablation sweep
def test_sweep_trains_evaluates_compares_and_skips_finished(sweep):
    path, out, stdout = sweep
    for f in ("comparison.md", "comparison.csv", "success.png", "val_loss.png", "sweep.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    for f in ("success.png", "val_loss.png"):
        with Image.open(os.path.join(out, f)) as im:
            assert im.format == "PNG" and np.asarray(im.convert("L")).std() > 5
    rows = list(csv.DictReader(open(os.path.join(out, "comparison.csv"))))
    assert [(r["variant"], float(r["x"])) for r in rows] == [("web_0", 0.0), ("web_0.2", 0.2)]
    for r in rows:
        assert 0.0 <= float(r["success/all/ci_low"]) <= float(r["success/all"]) <= float(r["success/all/ci_high"]) <= 1
        assert float(r["tabletop_single_arm/action_mse"]) > 0 and float(r["tabletop_web_vl/loss/text"]) > 0
    # the variants really differ (web data or not) while being evaluated on the same validation examples
    assert rows[0]["tabletop_single_arm/loss/flow"] != rows[1]["tabletop_single_arm/loss/flow"]
    assert rows[0]["tabletop_single_arm/examples"] == rows[1]["tabletop_single_arm/examples"]
    md = open(os.path.join(out, "comparison.md")).read()
    assert "| web_0 | 0.0 | flow | 8 |" in md and "| web_0.2 | 0.2 |" in md and "tabletop_web_vl" in md
    for v in ("web_0", "web_0.2"):
        assert os.path.isfile(os.path.join(out, v, "eval", str(STEPS), "results.json"))
    first = {v: json.load(open(os.path.join(out, v, "ablation.json"))) for v in ("web_0", "web_0.2")}
    stamp = os.path.getmtime(os.path.join(out, "web_0", "ablation.json"))

    # rerun: both variants are skipped
    res = run([sys.executable, "tools/ablate.py", f"--config={path}", f"--out={out}"])
    assert res.stdout.count("done (skipped") == 2 and "training" not in res.stdout
    assert os.path.getmtime(os.path.join(out, "web_0", "ablation.json")) == stamp

    # a half-trained variant resumes (trainer's resume) and, resume being exact, evaluates identically
    os.remove(os.path.join(out, "web_0", "ablation.json"))
    shutil.rmtree(os.path.join(out, "web_0", "checkpoints", str(STEPS)))
    res = run([sys.executable, "tools/ablate.py", f"--config={path}", f"--out={out}", "--variants=web_0"])
    assert "training from step 4" in res.stdout and res.stdout.count("done (skipped") == 0
    again = json.load(open(os.path.join(out, "web_0", "ablation.json")))
    assert again["success"] == first["web_0"]["success"] and again["offline"] == first["web_0"]["offline"]


def test_comparison_of_named_variants_has_group_columns_and_no_x(tmp_path):
    """Two named variants (no varied key) with Meta-World group cells: a column per group in the table, the
    CSV and the plot; no x column."""
    from vla_jax.eval.ablate import write_comparison

    def cell(k, n):
        return {"rate": k / n, "ci95": [max(0.0, k / n - 0.2), min(1.0, k / n + 0.2)], "n": n, "successes": k}

    rows = [{"variant": v, "overrides": {}, "varied": "", "x": None, "on_axis": False, "step": 100,
             "action_head": "flow", "offline": {}, "train_loss": 0.5, "baselines": {},
             "success": {"all": cell(k, 10), "train": cell(k, 10), "Easy": cell(k, 6), "Hard": cell(0, 4)}}
            for v, k in (("mt50_alone", 3), ("mt50_cotrain", 5))]
    paths = write_comparison(rows, str(tmp_path))
    md = open(paths["markdown"]).read()
    assert "| variant | head | steps | all | train | Easy | Hard | train loss |" in md and "None" not in md
    assert "| mt50_cotrain | flow | 100 | 50% [30, 70] | 50% [30, 70] | 83% [63, 100] | 0% [0, 20] |" in md
    header = next(csv.reader(open(paths["csv"])))
    assert "success/Easy" in header and "success/Hard/ci_high" in header
    with Image.open(paths["success_png"]) as im:
        assert np.asarray(im.convert("L")).std() > 5


def test_metaworld_mixture_sweep_differs_only_in_the_mixture_weights():
    """configs/ablations/metaworld_mixture.py: MT50 alone vs co-trained, the same model, tokenizer, steps and seed,
    evaluated on the MT50 suite."""
    from vla_jax.eval.ablate import Sweep

    sweep = Sweep("configs/ablations/metaworld_mixture.py:steps=30,data_dir=/data/mw")
    alone, cotrain = (sweep.train_config(n) for n in ("mt50_alone", "mt50_cotrain"))
    assert alone.num_steps == cotrain.num_steps == 30 and alone.seed == cotrain.seed
    assert alone.data.data_dir == cotrain.data.data_dir == "/data/mw"
    assert alone.model.to_dict() == cotrain.model.to_dict() and alone.data.tokenizer == cotrain.data.tokenizer
    weights = {n: (alone.data.mixture[n], cotrain.data.mixture[n]) for n in cotrain.data.mixture}
    assert weights.pop("metaworld_mt50") == (0.6, 0.6)
    assert weights and all(a == 0.0 and c > 0 for a, c in weights.values()), weights
    assert sweep.eval["suite"] == "metaworld_mt50" and sweep.eval["ema"]


def test_launch_only_prints_one_command_per_variant(tmp_path, capsys):
    tool = load_tool("ablate")
    out = str(tmp_path / "abl")
    assert tool.main(["--config=configs/ablations/mixture.py:steps=50", f"--out={out}", "--launch_only"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    names = ["discrete", "no_bimanual", "no_grounding", "web_0", "web_0.1", "web_0.2", "web_0.3"]
    assert len(lines) == len(names)
    for line, name in zip(lines, names):
        assert line.startswith("python -m vla_jax.train --config=") and "--config.num_steps=50" in line
        assert f"--workdir={os.path.join(out, name)} " in line
    assert "--config.model.action_head=discrete" in lines[0]
    assert "--config.data.mixture.tabletop_bimanual=0.0" in lines[1]
    assert "--config.data.datasets.tabletop_single_arm.grounding=False" in lines[2]
    assert "--config.data.mixture.tabletop_web_vl=0.3" in lines[-1]
    assert not os.path.exists(out)  # nothing written
    # an override that is not a config field stops before anything runs, with one line
    bad = tmp_path / "bad.py"
    bad.write_text("import ml_collections\n\ndef get_config(arg=None):\n"
                   "    c = ml_collections.ConfigDict()\n    c.base = 'configs/pretrain.py:debug'\n"
                   "    c.variants = ml_collections.ConfigDict({'x': ml_collections.ConfigDict("
                   "{'data.mixture.nope': 1.0}, allow_dotted_keys=True)}, allow_dotted_keys=True)\n    return c\n")
    assert tool.main([f"--config={bad}", f"--out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: variant x: unknown config key") and "\n" not in err
    # so do evaluation settings that name no suite, or splits the suite does not have
    for setting, needle in (("suite='nope'", "--suite=nope: unknown"), ("splits='nope'", "--splits=nope: unknown")):
        bad.write_text("import ml_collections\n\ndef get_config(arg=None):\n"
                       "    c = ml_collections.ConfigDict()\n    c.base = 'configs/pretrain.py:debug'\n"
                       "    c.variants = {'x': {}}\n"
                       f"    c.eval = dict({setting})\n    return c\n")
        assert tool.main([f"--config={bad}", f"--out={out}", "--launch_only"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: sweep config {bad} eval: {needle}") and "\n" not in err, err


def test_grounding_probe_reads_location_tokens():
    from vla_jax.eval.grounding_probe import _cell

    assert _cell("<loc37>") == (3, 7) and _cell("<loc3>") is None and _cell("red") is None and _cell("") is None


def test_grounding_probe_answers_ids_past_the_tokenizer_as_no_cell():
    """A model vocabulary larger than the tokenizer (the discrete head's bins) can generate ids it cannot decode."""
    from vla_jax.eval.grounding_probe import _answer, _cell
    from vla_jax.eval.offline import UNKNOWN

    class Pieces:
        vocab_size = 2

        def decode(self, ids: list[int]) -> str:
            return ["<loc37>", "red"][ids[0]]

    assert [_answer(Pieces(), i) for i in (0, 1, 2, 511)] == ["<loc37>", "red", UNKNOWN, UNKNOWN]
    assert _cell(UNKNOWN) is None
