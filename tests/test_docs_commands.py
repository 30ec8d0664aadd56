"""Every fenced shell command of README.md and docs/*.md is run, run with tiny settings, or skipped for a stated reason.

``COMMANDS`` maps each documented command (a regular expression, matched against the whole command with its
trailing comment removed and whitespace collapsed) to how it is exercised:

* ``run``  — as written;
* ``tiny`` — with the tiny settings of its program appended (``TINY_FLAGS``; later flags win);
* ``skip`` — not run, for the reason given.

A command no entry matches fails ``test_every_documented_command_is_in_the_table``, so the docs cannot drift
from the test. The slow test runs the ``run`` / ``tiny`` commands in document order in one temporary working
directory (the repository's configs, tools, launch and benchmarks linked in), so later commands use the data
and runs earlier ones made, as a reader following the docs would, and checks the files each rule says its command
makes. ``python`` and ``.venv/bin/python`` are this test's interpreter; the environment is the trainer tests'
(``vla_jax.train.testing.env``: one CPU device, the session's compilation cache).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from vla_jax.train import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[A-Za-z]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
SHELL_LANGS = {"bash", "sh", "console", "shell"}
INTERPRETER = re.compile(r"(?<![\w/.-])(?:\.venv/bin/python|python)(?=\s)")


def _overrides(values: dict) -> list[str]:
    """``--config.KEY=VALUE`` flags (tuples as their repr, which the config parser reads back)."""
    return [f"--config.{key}={value!r}" if isinstance(value, tuple) else f"--config.{key}={value}"
            for key, value in values.items()]


# The tiny model of vla_jax.train.testing with room for the bimanual tabletop (14-D actions), no add-ons (the
# discrete head takes none of prefix_readout), two steps.
TRAIN_TINY = _overrides({**testing.TINY, "model.max_action_dim": 14, "model.max_state_dim": 14, "model.addons": (),
                         "model.vocab_size": 512,  # the tiny data's tokenizer + 256 discrete action bins
                         "model.max_text_len": 24, "num_steps": 2, "checkpoint.every": 2})
TINY_FLAGS: dict[str, list[str]] = {
    "tools/generate_data.py": ["--episodes_per_embodiment=8", "--web_examples=40", "--num_workers=1",
                               "--image_size=32"],
    "-m vla_jax.train": TRAIN_TINY,
    "tools/evaluate.py": ["--episodes=1", "--num_envs=2", "--record=0", "--offline_batches=1", "--tasks=pick",
                          "--embodiments=single_arm", "--splits=train", "--max_steps=8", "--grounding_scenes=1"],
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """How the documented commands matching ``pattern`` are exercised: ``run``, ``tiny`` or ``skip``; ``makes``:
    globs (relative to the working directory) that must match once the command has run."""

    pattern: str
    how: str
    reason: str = ""
    makes: tuple[str, ...] = ()


PY = r"(?:\.venv/bin/python|python)"
LONG_EXPERIMENT = "reproduces a documented experiment: thousands of training steps or 20+ episodes per cell (CPU hours)"
METAWORLD = ("MuJoCo rendering of Meta-World (minutes to hours); tests/test_metaworld_pipeline.py::mw_dir runs "
             "generate_data, tests/test_metaworld_pipeline.py::test_train_then_evaluate_closed_loop training and "
             "evaluate, small")
MULTIPROCESS = ("tests/test_train_multiprocess.py::test_two_processes_match_one_process runs launch/local.sh 2 with "
                "DEVICES_PER_PROCESS=4 on the debug preset's synthetic mixture")
COMMANDS: list[Rule] = [
    # README quick start: the test's interpreter is that environment, so only its vla_jax commands run.
    Rule(r"python3 -m venv \.venv && .* && \.venv/bin/python tools/generate_data\.py .* -m vla_jax\.train .*", "tiny",
         makes=("data/default/tokenizer.model", "runs/debug/checkpoints/2", "runs/debug/metrics.jsonl")),
    Rule(r"python3 -m venv \.venv && .* -m pytest -q -n 2 --dist loadfile", "skip",
         "creates a venv and runs the whole test suite (CI)"),
    Rule(rf"{PY} tools/generate_data\.py --out_dir[= ]data/default( --if_missing)?", "tiny"),
    Rule(rf"{PY} tools/model_summary\.py --config=configs/pretrain\.py:pi0", "run"),
    Rule(rf"{PY} tools/inspect_data\.py --config=configs/pretrain\.py:debug --out=/tmp/samples\.png", "run"),
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:debug --workdir=runs/debug", "tiny",
         makes=("runs/debug/checkpoints/2",)),
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:debug,head=discrete --workdir=runs/discrete", "tiny",
         makes=("runs/discrete/checkpoints/2",)),
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:debug,mixture=synthetic --workdir=runs/smoke", "skip",
         "tests/test_train_resume.py::test_sigkill_then_resume_is_bitwise_identical runs python -m vla_jax.train "
         "on the debug preset's synthetic mixture"),
    Rule(rf"XLA_FLAGS=--xla_force_host_platform_device_count=2 {PY} -m vla_jax\.train .*--config\.sharding=fsdp",
         "skip", "tests/test_train_resume.py::test_sigkill_then_resume_is_bitwise_identical trains the synthetic "
         "mixture with python -m vla_jax.train on 2 host devices, mesh.shape.fsdp=2, config.sharding's default fsdp"),
    Rule(rf"{PY} tools/plot_metrics\.py --workdir=runs/debug", "run", makes=("runs/debug/metrics.png",)),
    Rule(rf"{PY} tools/aot_compile\.py --config=configs/pretrain\.py:pi0.* --topology=v5p:4x4x4 .*", "skip",
         "compiles the 3B pi0 preset for a 64-chip slice (minutes); tests/test_aot_compile.py::test_debug_step_"
         "compiles_for_v5p_slice_with_fsdp runs the tool's compile_report on the debug preset"),
    Rule(rf"{PY} tools/export\.py --workdir=runs/debug --out=exports/debug --format=all", "run",
         makes=("exports/debug/model.safetensors", "exports/debug/policy.onnx")),
    Rule(rf"{PY} tools/import_torch\.py --folder=exports/debug --out=runs/(from_torch|debug_import)", "run",
         makes=("runs/*/checkpoints/0",)),
    Rule(rf"{PY} tools/evaluate\.py --workdir=runs/debug --episodes=50 --baselines", "tiny",
         makes=("runs/debug/eval/2/results.json",)),
    Rule(rf"{PY} tools/generate_data\.py --out_dir=data/(default|metaworld) --suite=metaworld_mt50 .*", "skip",
         METAWORLD),
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:debug,mixture=metaworld_mt50(_cotrain)? .*", "skip",
         "needs the Meta-World datasets (" + METAWORLD + ")"),
    Rule(rf"{PY} tools/evaluate\.py .*--suite=metaworld_mt(50|10).*", "skip", METAWORLD),
    Rule(rf"{PY} -m vla_jax\.serve .*", "skip",
         "a long-running policy server; tests/test_serve_cli.py::test_sigterm_answers_the_request_in_flight_then_"
         "exits_0_without_jax and tests/test_serve_cli.py::test_torch_backend_serves_without_jax start it on an "
         "export folder"),
    Rule(rf"{PY} tools/evaluate\.py --server=ws://127\.0\.0\.1:8000 .*", "skip",
         "needs a running policy server; tests/test_serve_closed_loop.py::test_evaluate_through_the_server_equals_"
         "in_process runs tools/evaluate.py --server against one"),
    Rule(rf"{PY} tools/ablate\.py .*", "skip",
         "trains and evaluates one run per variant (hours); tests/test_eval_tools.py::test_sweep_trains_evaluates_"
         "compares_and_skips_finished runs the tool on a tiny sweep, tests/test_eval_tools.py::test_launch_only_"
         "prints_one_command_per_variant its --launch_only"),
    Rule(r"(bash |DEVICES_PER_PROCESS=4 )launch/local\.sh 2 --config=configs/pretrain\.py:debug,mixture=synthetic "
         r"--workdir=runs/mp", "skip", MULTIPROCESS),
    # docs/data.md
    Rule(rf"{PY} tools/prepare_data\.py --config=configs/pretrain\.py:debug", "run"),
    Rule(rf"{PY} tools/compute_stats\.py --config=configs/pretrain\.py:debug( --if_missing)?", "run"),
    Rule(rf"{PY} benchmarks/data_(throughput|scaling)\.py.*", "skip", "a benchmark: minutes by design"),
    Rule(rf"{PY} (tools/prepare_data|tools/inspect_data|-m vla_jax\.train)\.?p?y? "
         r"--config=configs/pretrain\.py:pi0,mixture=oxe_magic_soup --config\.data\.data_dir=/data/oxe.*", "skip",
         "needs the Open X-Embodiment release in /data/oxe (terabytes)"),
    Rule(rf"{PY} tools/generate_data\.py --out_dir data/default --lerobot v3\.0", "tiny",
         makes=("data/default/lerobot_*",)),
    Rule(rf"{PY} tools/compute_stats\.py --config=configs/pretrain\.py:debug,mixture=lerobot", "run"),
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:debug,mixture=lerobot --workdir=runs/lerobot",
         "skip", "tests/test_data_lerobot.py::test_train_steps_on_a_lerobot_dataset_from_config_only runs it on a "
         "synthetic LeRobotDataset with the tiny model"),
    # docs/evaluation.md, experiments.md, results.md
    Rule(rf"{PY} tools/evaluate\.py --workdir=runs/debug --step=200 .*", "skip",
         "needs step 200 of a full debug-preset run; tests/test_eval_tools.py::test_evaluate_tool_writes_report_and_"
         "is_deterministic evaluates a tiny run with --tasks, --embodiments and --splits"),
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:debug --workdir=runs/debug --config\.eval\.every=100"
         r" .*", "skip", "a full debug-preset run evaluated every 100 steps; tests/test_eval_tools.py::"
         "test_periodic_eval_is_logged_and_leaves_training_unchanged trains a tiny run with config.eval.every=4"),
    Rule(rf"{PY} benchmarks/grounding_speed\.py .*", "skip", "a benchmark: 1,500 CPU steps"),
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:debug --workdir=runs/"
         r"(pointer|approach|stem|posemb|keypoints\d?) .*", "skip", LONG_EXPERIMENT),
    Rule(rf"{PY} tools/evaluate\.py --workdir=(runs/(pointer|approach|stem|posemb|keypoints\d?)|RUN) .*", "skip",
         LONG_EXPERIMENT),
    Rule(rf"{PY} tools/plot_metrics\.py --workdir=runs/stem --smooth=10", "skip", LONG_EXPERIMENT),
    # docs/export.md, interop.md
    Rule(rf"{PY} tools/export\.py --workdir=runs/small .*", "skip",
         "needs step 20000 of a small-preset run (hours); tests/test_export.py::test_cli_ema_step_bfloat16"
         " runs the tool with --step, --ema and --dtype=bfloat16"),
    Rule(rf"{PY} tools/export\.py --workdir=runs/(pi0_ft|pi0_base) .*", "skip",
         "needs a downloaded openpi pi0 checkpoint (GBs); on the tiny imported fixture, tests/test_openpi_parity.py::"
         "test_openpi_export_gives_back_the_imported_checkpoint runs --format=openpi, tests/test_openpi_parity.py::"
         "test_export_of_the_imported_run_passes_its_parity_gate --format=pytorch, tests/test_lerobot.py::"
         "test_round_trip_is_bit_exact_in_float32 --format=lerobot"),
    Rule(rf"{PY} tools/(import_openpi|import_lerobot)\.py --(checkpoint=CKPT|folder=FOLDER) .*", "skip",
         "placeholder path of a downloaded checkpoint (GBs); tests/test_openpi_parity.py::test_import_writes_the_"
         "converted_params_and_norm_stats and tests/test_lerobot.py::test_round_trip_is_bit_exact_"
         "in_float32 run the tools on tiny ones"),
    Rule(rf"{PY} tools/check_parity\.py --fixture=\.\./shared/fixtures/openpi/pi05?_dummy\.npz .*", "skip",
         "the openpi fixtures live outside the repository; tests/test_openpi_parity.py::test_check_parity_tool_passes_"
         "on_the_fixture runs the tool when they are present"),
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:size=pi05?,mixture=MIXTURE .*", "skip",
         "placeholder mixture, 3B preset; tests/test_openpi_pi05.py::test_fsdp_fine_tune_from_the_imported_checkpoint_"
         "lowers_the_loss trains size=pi05 from an imported tiny checkpoint, tests/test_train_resume.py::test_init_"
         "from_checkpoint_loads_every_matching_parameter checks config.init.from_checkpoint"),
    # docs/launch.md, scaling.md
    Rule(rf"{PY} -m vla_jax\.train --config=configs/pretrain\.py:debug --workdir=runs/wandb "
         r"--config\.metrics\.wandb\.project=vla_jax --config\.metrics\.wandb\.mode=offline", "tiny",
         makes=("runs/wandb/wandb_run_id", "runs/wandb/wandb/offline-run-*/run-*.wandb")),
    Rule(r"TPU_NAME=\S+ ZONE=\S+ SYNC=1 launch/tpu_pod\.sh .*", "skip", "needs a Cloud TPU pod and gs://"),
    Rule(r"sbatch --nodes=4 launch/slurm_gpu\.sbatch .*", "skip", "needs a SLURM GPU cluster"),
]


def doc_commands(root: str = ROOT) -> list[tuple[str, str]]:
    """(doc, command) for every command line of the fenced bash / sh / console / shell blocks, in reading order.

    Backslash continuations are joined, ``$ `` prompts and trailing ``# comments`` dropped, whitespace collapsed;
    in ``console`` blocks only ``$ `` lines are commands.
    """
    docs = ["README.md"] + sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "docs", "*.md")))
    found = []
    for doc in docs:
        with open(os.path.join(root, doc)) as f:
            text = f.read()
        for block in FENCE.finditer(text):
            lang = block.group("lang")
            if lang not in SHELL_LANGS:
                continue
            indent = len(block.group("indent"))
            body = "\n".join(line[indent:] for line in block.group("body").splitlines()).replace("\\\n", " ")
            for line in body.splitlines():
                line = line.strip()
                if lang == "console" and not line.startswith("$ "):
                    continue
                line = line.removeprefix("$ ")
                if not line or line.startswith("#"):
                    continue
                found.append((doc, " ".join(re.split(r"\s+#\s", line, maxsplit=1)[0].split())))
    return found


def rule_for(command: str) -> Rule | None:
    """The one rule whose pattern matches all of ``command``; None if none does."""
    matches = [rule for rule in COMMANDS if re.fullmatch(rule.pattern, command)]
    assert len(matches) <= 1, f"{command!r} matches several rules: {[r.pattern for r in matches]}"
    return matches[0] if matches else None


def shell_line(command: str, how: str) -> str:
    """``command`` as the test runs it: this interpreter, and for ``tiny`` its program's tiny flags appended."""
    parts = command.split(" && ")
    if parts[0].startswith("python3 -m venv"):  # the quick start: this interpreter's environment is the venv
        parts = [p for p in parts if p.startswith(".venv/bin/python")]
    out = []
    for part in parts:
        if how == "tiny":
            part += "".join(" " + shlex.quote(flag) for program, flags in TINY_FLAGS.items() if program in part
                            for flag in flags)
        out.append(INTERPRETER.sub(shlex.quote(sys.executable), part))
    return " && ".join(out)


def test_every_documented_command_is_in_the_table():
    missing = [f"{doc}: {command}" for doc, command in doc_commands() if rule_for(command) is None]
    assert not missing, "documented commands not in tests/test_docs_commands.py COMMANDS:\n" + "\n".join(missing)


def test_every_rule_matches_a_documented_command():
    commands = [command for _, command in doc_commands()]
    stale = [rule.pattern for rule in COMMANDS if not any(re.fullmatch(rule.pattern, c) for c in commands)]
    assert not stale, f"rules matching no documented command: {stale}"
    assert all(rule.how in ("run", "tiny", "skip") for rule in COMMANDS)
    assert all(rule.reason for rule in COMMANDS if rule.how == "skip"), "every skip states its reason"


def test_every_cited_covering_test_exists():
    """A skip reason's ``tests/FILE.py::NAME`` is a test function (or fixture) defined in that file."""
    cited = {ref for rule in COMMANDS for ref in re.findall(r"tests/\w+\.py::\w+", rule.reason)}
    assert cited, "the skip reasons name the tests that cover their commands"
    missing = []
    for ref in sorted(cited):
        path, name = ref.split("::")
        with open(os.path.join(ROOT, path)) as f:
            if not re.search(rf"^def {name}\(", f.read(), re.M):
                missing.append(ref)
    assert not missing, f"skip reasons cite tests that do not exist: {missing}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    """A working directory as the docs assume: the repository's code linked in, nothing generated yet."""
    path = tmp_path_factory.mktemp("docs_commands")
    for name in ("configs", "tools", "launch", "benchmarks", "vla_jax"):
        os.symlink(os.path.join(ROOT, name), path / name)
    return str(path)


@pytest.mark.slow
def test_documented_commands_run(workdir):
    # the trainer tests' environment: one CPU device, cheap XLA optimisation, the session's compilation cache
    env = testing.env(PYTHONPATH=workdir, PYTHON=sys.executable)
    ran = set()
    for doc, command in doc_commands():
        rule = rule_for(command)
        line = "" if rule is None or rule.how == "skip" else shell_line(command, rule.how)
        if not line or line in ran:  # README and docs/*.md repeat some commands (python / .venv/bin/python)
            continue
        ran.add(line)
        out = subprocess.run(["bash", "-c", line], cwd=workdir, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, f"{doc}: {command}\nran: {line}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        missing = [pattern for pattern in rule.makes if not glob.glob(os.path.join(workdir, pattern))]
        assert not missing, f"{doc}: {command}\nran: {line}\nmade none of {missing}"
