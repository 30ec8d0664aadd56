"""The deployment folder: read a training checkpoint, convert, verify parity, write files + a model card.

Folder layout (``--format=all``)::

    config.json         architecture (VLAConfig fields), torch_dtype, export metadata (preset, step, parity, ...)
    model.safetensors   PyTorch state_dict (names in vla_jax/export/to_torch.py)
    torch_port/         the self-contained PyTorch package, core + add-ons (torch + numpy + safetensors only)
    policy.onnx         the whole sampling path (float32, dynamic batch)
    norm_stats.json     per-dataset normalization stats (+ method and masks) from the checkpoint
    tokenizer.model     the SentencePiece tokenizer the model was trained with (when found)
    README.md           model card: preset, training steps, data mixture, parity figures

``--format=openpi`` writes the run in openpi's checkpoint layout instead (:func:`export_openpi`)::

    params/                             orbax PyTree checkpoint {"params": <openpi's nested pi0 params>}, float32
    assets/<dataset>/norm_stats.json    openpi's {"norm_stats": {"state": ..., "actions": ...}} per robot dataset

``--format=lerobot`` writes LeRobot's pi0 or pi0.5 pretrained folder (:func:`export_lerobot`)::

    model.safetensors                   PI0Policy / PI05Policy state_dict (names in vla_jax/interop/lerobot.py)
    config.json                         PI0Config / PI05Config ("type": "pi0" | "pi05")
    policy_{pre,post}processor.json     processor pipelines + their normalizer state files (one dataset's MEAN_STD
                                        statistics for pi0, QUANTILES for pi0.5)

Checkpoints are read and written by ``vla_jax/train/checkpoint.py``: :func:`export` reads the parameters of
one step with its ``load_params``, :func:`import_torch` writes a params-only step with its ``write_checkpoint``
(a new run starts from it with ``config.init.from_checkpoint``).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time

import ml_collections

from vla_jax.config import load_config
from vla_jax.data.specs import get_spec
from vla_jax.export import parity as parity_lib
from vla_jax.export import to_onnx, to_torch
from vla_jax.export import torch_port as tp
from vla_jax.models.vla import make_config
from vla_jax.train.checkpoint import CheckpointError, available_steps, load_params, write_checkpoint

FORMATS = ("pytorch", "onnx", "all", "openpi", "lerobot")
TOKENIZER_FILE = "tokenizer.model"
MAX_ONNX_DECODE_STEPS = 512  # the discrete ONNX graph unrolls H * A greedy steps (debug: 112, pi0: 1600)

# config.model fields the PyTorch module implements (anything else is a model it does not know).
SUPPORTED_MODEL_FIELDS = {
    "": {"image_size", "num_cameras", "max_text_len", "action_horizon", "max_action_dim", "max_state_dim",
         "vocab_size", "vit", "llm", "expert", "action_head", "num_flow_steps", "dtype", "remat", "scan_layers",
         "addons", "openpi_semantics", "action_expert"},
    "vit": {"width", "depth", "mlp_dim", "num_heads", "patch_size", "posemb_init"},
    "llm": {"width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim"},
    "expert": {"width", "mlp_dim"},
}


class ExportError(ValueError):
    """A checkpoint, flag or model that cannot be exported; the message is one line."""


def model_config(config: dict):
    """The VLAConfig of a saved training config; ExportError for models the PyTorch module does not support."""
    model = config["model"]
    preset = config.get("preset", "?")
    for section, fields in SUPPORTED_MODEL_FIELDS.items():
        node = model if not section else model.get(section, {})
        extra = sorted(set(node) - fields)
        if extra:
            name = f"config.model.{section + '.' if section else ''}{extra[0]}"
            raise ExportError(f"preset {preset!r} is not supported by the PyTorch module: {name} is not implemented "
                              "in vla_jax/export/torch_port")
    try:
        cfg = make_config(ml_collections.ConfigDict(model))
        tp.check_config(to_torch.config_to_dict(cfg))
    except (ValueError, KeyError) as e:
        raise ExportError(f"preset {preset!r} is not supported by the PyTorch module: {e}") from None
    return cfg


def find_tokenizer(workdir: str, config: dict, explicit: str | None = None) -> str | None:
    """The SentencePiece model the run was trained with: ``explicit``, ``<workdir>/tokenizer.model`` or
    ``config.data.data_dir/config.data.tokenizer`` (relative to the cwd or the workdir's parent)."""
    if explicit:
        if not os.path.isfile(explicit):
            raise ExportError(f"--tokenizer={explicit} does not exist")
        return explicit
    candidates = [os.path.join(workdir, TOKENIZER_FILE)]
    data = config.get("data") or {}
    if data.get("tokenizer"):
        tok = os.path.expanduser(str(data["tokenizer"]))
        if os.path.isabs(tok):
            candidates.append(tok)
        else:
            base = os.path.expanduser(str(data.get("data_dir", "")))
            for root in ("", os.path.dirname(os.path.abspath(workdir))):
                candidates.append(os.path.join(root, base, tok))
    return next((c for c in candidates if os.path.isfile(c)), None)


def enrich_norm_stats(norm_stats: dict | None, config: dict) -> dict | None:
    """Adds each robot dataset's normalization method, masks and dims (from its spec) so the folder alone
    can un-normalize. Entries whose spec is unknown keep the spec defaults (bounds_q99 action, normal state)."""
    if not norm_stats:
        return norm_stats
    datasets = (config.get("data") or {}).get("datasets") or {}
    out = {}
    for name, stats in norm_stats.items():
        if isinstance(stats, dict) and "action" in stats and name in datasets:
            try:
                spec = get_spec(str(datasets[name]["spec"]), name)
                stats = {**stats, "action_normalization": spec.action_normalization,
                         "state_normalization": spec.state_normalization,
                         "action_norm_mask": spec.normalize_mask("action"),
                         "state_norm_mask": spec.normalize_mask("state"),
                         "action_dim": spec.action_dim, "state_dim": spec.state_dim}
            except Exception:  # noqa: BLE001 - an unknown spec keeps the documented defaults
                pass
        out[name] = stats
    return out


# ----------------------------------------------------------------------------------------- export
def export(workdir: str, out: str, *, step: int | None = None, ema: bool = False, fmt: str = "all",
           dtype: str = "float32", opset: int | None = None, num_steps: int | None = None,
           tokenizer: str | None = None, tolerance: float = parity_lib.TOLERANCE_F32, seeds=(0, 1),
           dataset: str | None = None, log=print) -> dict:
    """Exports a checkpoint to ``out``; returns the export report (also in config.json["export"]).

    Non-finite parameters are refused when read (:func:`vla_jax.train.checkpoint.load_params`). The folder is written to
    ``out.tmp-<pid>`` and renamed into place only if every action is finite and every float32 parity figure
    is within ``tolerance``. ``fmt="openpi"`` goes to :func:`export_openpi` (``dataset``: the one robot dataset
    whose norm stats it writes), ``fmt="lerobot"`` to :func:`export_lerobot` (``dataset``: the one it carries)."""
    import torch

    if fmt not in FORMATS:
        raise ExportError(f"--format={fmt} must be one of {', '.join(FORMATS)}")
    if fmt == "openpi":
        if dtype != "float32":
            raise ExportError(f"--dtype={dtype}: --format=openpi writes the float32 params as read")
        return export_openpi(workdir, out, step=step, ema=ema, dataset=dataset, log=log)
    if fmt == "lerobot":
        return export_lerobot(workdir, out, step=step, ema=ema, dataset=dataset, dtype=dtype, log=log)
    if dataset is not None:
        raise ExportError(f"--dataset={dataset} applies to --format=openpi / lerobot (the other formats keep every "
                          "dataset)")
    if dtype not in tp.DTYPES:
        raise ExportError(f"--dtype={dtype} must be one of {', '.join(tp.DTYPES)}")
    want_torch, want_onnx = fmt in ("pytorch", "all"), fmt in ("onnx", "all")
    opset = opset or to_onnx.DEFAULT_OPSET
    if want_onnx:
        try:
            to_onnx.check_opset(opset)
        except to_onnx.OpsetError as e:
            raise ExportError(str(e)) from None
    if os.path.exists(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, tp.CONFIG_FILE)):
        raise ExportError(f"--out={out} exists and is not an exported folder; choose an empty or new directory")

    t0 = time.perf_counter()
    ck = _read(workdir, step, ema)
    cfg = model_config(ck.config)
    if want_onnx and cfg.action_head == "discrete" and cfg.num_action_tokens > MAX_ONNX_DECODE_STEPS:
        raise ExportError(f"preset {ck.config.get('preset')!r}: the discrete-head ONNX graph unrolls "
                          f"{cfg.num_action_tokens} decoding steps (> {MAX_ONNX_DECODE_STEPS}); use --format=pytorch")
    log(f"[export] {ck.path}: preset {ck.config.get('preset', '?')}, head {cfg.action_head}, "
        f"{'EMA' if ema else 'raw'} params ({time.perf_counter() - t0:.1f}s)")
    try:
        torch_sd = to_torch.torch_state_dict(ck.params, cfg)
    except (KeyError, ValueError) as e:
        raise ExportError(f"checkpoint {ck.path} params do not match its config: {e}") from None
    tok = find_tokenizer(workdir, ck.config, tokenizer)

    tmp = f"{os.path.abspath(out).rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        report = {
            "preset": ck.config.get("preset"), "step": ck.step, "ema": ema, "source": os.path.abspath(ck.path),
            "formats": [f for f, w in (("pytorch", want_torch), ("onnx", want_onnx)) if w],
            "dtype": dtype, "num_params": int(sum(v.size for v in to_torch.flatten_params(ck.params).values())),
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        config = to_torch.save_torch(tmp, ck.params, cfg, dtype)
        if not want_torch:
            os.remove(os.path.join(tmp, tp.WEIGHTS_FILE))
            shutil.rmtree(os.path.join(tmp, "torch_port"))
        stats = enrich_norm_stats(ck.norm_stats, ck.config)
        if stats:
            with open(os.path.join(tmp, tp.NORM_STATS_FILE), "w") as f:
                json.dump(stats, f, indent=1)
        if tok:
            shutil.copyfile(tok, os.path.join(tmp, TOKENIZER_FILE))

        policy32 = tp.VLAPolicy({**config, "torch_dtype": "float32"}, dtype=torch.float32)
        policy32.load_state_dict(torch_sd)
        policy32.eval()
        session = None
        if want_onnx:
            t1 = time.perf_counter()
            to_onnx.export_onnx(policy32, os.path.join(tmp, to_onnx.ONNX_FILE), num_steps=num_steps, opset=opset)
            session = to_onnx.onnx_session(os.path.join(tmp, to_onnx.ONNX_FILE))
            report["onnx"] = {"opset": opset, "num_steps": int(num_steps or cfg.num_flow_steps)
                              if cfg.action_head == "flow" else None,
                              "exporter": to_onnx.exporter_info(opset),
                              "seconds": round(time.perf_counter() - t1, 1)}
            log(f"[export] wrote {to_onnx.ONNX_FILE} (opset {opset}) in {report['onnx']['seconds']}s")
        bf16 = None
        if dtype == "bfloat16" and want_torch:
            bf16 = tp.VLAPolicy.from_pretrained(tmp)  # the bf16 weights exactly as written
        t1 = time.perf_counter()
        try:
            figures = parity_lib.measure(cfg, ck.params, torch_policy=policy32, onnx_session=session,
                                         bf16_policy=bf16, num_steps=num_steps, tokenizer_path=tok, seeds=seeds)
            figures["tolerance_f32"] = tolerance
            report["parity"] = figures
            log("[export] parity (max abs action diff vs JAX f32): " + ", ".join(
                f"{k}={v:.2e}" for k, v in figures.items() if k.startswith(("torch", "onnx")))
                + f" over {figures['cases']} cases ({time.perf_counter() - t1:.1f}s)")
            parity_lib.check(figures, tolerance)
        except parity_lib.ParityError as e:
            raise ExportError(str(e)) from None

        report["tokenizer"] = TOKENIZER_FILE if tok else None
        report["norm_stats"] = tp.NORM_STATS_FILE if stats else None
        report["data"] = _data_summary(ck.config)
        report["train_steps"] = ck.config.get("num_steps")
        config["export"] = {**report, "train_config": ck.config}
        with open(os.path.join(tmp, tp.CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        card = model_card(config, report, sorted(os.listdir(tmp) + ["README.md"]))
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(card)
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"[export] wrote {out} in {time.perf_counter() - t0:.1f}s")
    return report


def _read(workdir: str, step: int | None, ema: bool):
    """:func:`load_params`, its CheckpointError as an ExportError (one line)."""
    try:
        return load_params(workdir, step, ema)
    except CheckpointError as e:
        raise ExportError(str(e)) from None


def export_openpi(workdir: str, out: str, *, step: int | None = None, ema: bool = False,
                  dataset: str | None = None, log=print) -> dict:
    """Writes a checkpoint of a ``pi0`` run (``openpi_semantics``, no add-ons) in openpi's layout
    (:func:`vla_jax.interop.openpi.write_checkpoint`): ``out/params`` and ``out/assets/<name>/norm_stats.json`` for
    every robot dataset of the checkpoint's norm stats, or only ``dataset``. No parity gate: the conversion is a
    pure re-layout, which the writer verifies exact. Written to ``out.tmp-<pid>``, renamed into place; returns the
    report. ExportError (one line) for another model, a dataset openpi cannot normalize, a missing ``dataset``."""
    from vla_jax.interop import openpi

    params_dir = os.path.join(out, "params")
    if os.path.exists(out) and os.listdir(out) and not os.path.isfile(os.path.join(params_dir, "_METADATA")):
        raise ExportError(f"--out={out} exists and is not an openpi export; choose an empty or new directory")
    t0 = time.perf_counter()
    ck = _read(workdir, step, ema)
    tmp = f"{os.path.abspath(out).rstrip('/')}.tmp-{os.getpid()}"
    try:
        openpi.check_model(ck.config["model"], ck.config.get("preset"))
        stats = openpi.robot_datasets(enrich_norm_stats(ck.norm_stats, ck.config))
        if dataset is not None:
            if dataset not in stats:
                raise ExportError(f"--dataset={dataset} has no state and action norm stats in {ck.path} (robot "
                                  f"datasets: {', '.join(stats) or 'none'})")
            stats = {dataset: stats[dataset]}
        variant = openpi.vla_jax_variant(openpi.flatten(ck.params["params"]))
        assets = {name: openpi.to_openpi_norm_stats(s, name, variant) for name, s in stats.items()}
        shutil.rmtree(tmp, ignore_errors=True)
        num_params = openpi.write_checkpoint(tmp, ck.params, assets)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except openpi.OpenpiError as e:
        raise ExportError(str(e)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"preset": ck.config.get("preset"), "step": ck.step, "ema": ema, "source": os.path.abspath(ck.path),
              "formats": ["openpi"], "num_params": num_params, "datasets": sorted(assets)}
    log(f"[export] {ck.path}: preset {ck.config.get('preset', '?')}, {'EMA' if ema else 'raw'} params -> openpi "
        f"layout {out} ({num_params:,} values; norm stats: {', '.join(sorted(assets)) or 'none'}) "
        f"in {time.perf_counter() - t0:.1f}s")
    return report


def export_lerobot(workdir: str, out: str, *, step: int | None = None, ema: bool = False, dataset: str | None = None,
                   dtype: str = "float32", log=print) -> dict:
    """Writes a checkpoint of a ``pi0`` or ``pi05`` run (``openpi_semantics``, no add-ons) as LeRobot's pi0 / pi0.5
    pretrained folder (:func:`vla_jax.interop.lerobot.write_folder`, ``config.model.action_expert`` picks the type)
    with the norm stats of ``dataset`` (default: the only robot dataset). No parity gate: the conversion is a pure
    re-layout, which the writer verifies exact. Written to ``out.tmp-<pid>``, renamed into place; returns the
    report. ExportError (one line) for another model, a dataset LeRobot cannot normalize, a missing or ambiguous
    ``dataset``, an ``out`` that is neither empty nor a LeRobot folder."""
    from vla_jax.interop import lerobot

    if os.path.exists(out) and os.listdir(out) and not lerobot.is_folder(out):
        raise ExportError(f"--out={out} exists and is not a LeRobot folder; choose an empty or new directory")
    t0 = time.perf_counter()
    ck = _read(workdir, step, ema)
    tmp = f"{os.path.abspath(out).rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        written = lerobot.write_folder(tmp, ck.params, ck.config["model"], enrich_norm_stats(ck.norm_stats, ck.config),
                                       dataset=dataset, dtype=dtype, preset=ck.config.get("preset"))
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except lerobot.LerobotError as e:
        raise ExportError(str(e)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"preset": ck.config.get("preset"), "step": ck.step, "ema": ema, "source": os.path.abspath(ck.path),
              "formats": ["lerobot"], "dtype": dtype, **written}
    log(f"[export] {ck.path}: preset {ck.config.get('preset', '?')}, {'EMA' if ema else 'raw'} params -> LeRobot "
        f"{written['type']} folder {out} ({written['keys']} keys, {written['num_params']:,} values, {dtype}; norm "
        f"stats: {written['dataset']}) in {time.perf_counter() - t0:.1f}s")
    return report


def _data_summary(config: dict) -> str:
    data = config.get("data") or {}
    if data.get("kind") == "synthetic":
        return f"synthetic ({data.get('num_sources', '?')} sources, in-memory test data)"
    mixture = data.get("mixture") or {}
    if not mixture:
        return "unknown"
    total = sum(float(w) for w in mixture.values()) or 1.0
    return ", ".join(f"{name} {float(w) / total:.0%}" for name, w in mixture.items())


def model_card(config: dict, report: dict, files: list[str]) -> str:
    """The README.md of the folder."""
    dec, vit = config["decoder"], config["vit"]
    par = report["parity"]
    rows = [("PyTorch float32", par.get("torch_f32")), ("onnxruntime float32", par.get("onnx_f32")),
            ("PyTorch bfloat16 vs JAX float32", par.get("torch_bf16_vs_jax_f32")),
            ("PyTorch bfloat16 vs JAX bfloat16", par.get("torch_bf16_vs_jax_bf16"))]
    parity_rows = "\n".join(f"| {name} | {value:.2e} |" for name, value in rows if value is not None)
    experts = " + ".join(f"{e['width']}w/{e['mlp_dim']}mlp" for e in dec["experts"])
    inputs = ("images f32 [B,C,R,R,3] in [-1,1], image_mask bool [B,C], tokens int32 [B,L], token_mask bool [B,L], "
              "state f32 [B,S] (normalized), state_mask bool [B,S], action_dim_mask bool [B,A]"
              + (", noise f32 [B,H,A]" if config["action_head"] == "flow" else ""))
    onnx_row = f"| ONNX exporter | {report['onnx']['exporter']} |\n" if report.get("onnx") else ""
    if config.get("action_expert", "pi0") == "pi05":
        inputs += (" (pi0.5: the state is not read, write it into the prompt; `policy.onnx` has no `state` / "
                   "`state_mask` inputs)")
    return f"""# vla_jax policy: preset `{report['preset']}`, {config['action_head']} head

Exported from `{report['source']}` ({'EMA' if report['ema'] else 'raw'} parameters) on {report['exported_at']}.

| | |
|---|---|
| preset | `{report['preset']}` |
| action head | {config['action_head']} ({config['num_flow_steps']} Euler steps by default) |
| parameters | {report['num_params']:,} |
| weights dtype | {report['dtype']} (`policy.onnx`: float32) |
{onnx_row}| training steps | {report['step']} of {report.get('train_steps')} |
| data mixture | {report.get('data')} |
| vision | ViT {vit['width']}w x {vit['depth']}, patch {vit['patch_size']}, {config['image_size']}px, {config['num_cameras']} cameras |
| decoder | {dec['depth']} layers, {dec['num_heads']} heads / {dec['num_kv_heads']} KV heads x {dec['head_dim']}, experts {experts}, vocab {dec['vocab_size']} |
| chunk | {config['action_horizon']} steps x {config['max_action_dim']} action dims, state {config['max_state_dim']} dims, text {config['max_text_len']} tokens |
| tokenizer | {report.get('tokenizer') or 'not found (tokenize with the one the run used)'} |
| normalization | {report.get('norm_stats') or 'none in the checkpoint'} |

## Inputs / outputs
{inputs} -> actions f32 [B,H,A] in normalized units (padded action dims are 0).
Un-normalize with `norm_stats.json` (`VLAPolicy.unnormalize_actions(actions, dataset)`).

## Numerical parity
Max abs difference of sampled actions vs the JAX model in float32, same inputs (random images,
{'a tokenized instruction' if par.get('tokenizer') else 'random token ids'}, random state, fixed noise),
{par['cases']} cases, {par['num_steps']} flow steps; largest |action| {par.get('max_abs_action', 0):.2f}.
The export is refused above {par['tolerance_f32']:.0e} in float32 and on any non-finite parameter or action.

| runtime | max abs diff |
|---|---|
{parity_rows}

## Files
{chr(10).join(f'- `{f}`' for f in files)}

## Use
See `docs/export.md` in vla_jax: `VLAPolicy.from_pretrained(folder)` (needs only torch, numpy, safetensors:
the `torch_port` package is in this folder) or `onnxruntime.InferenceSession(folder + "/policy.onnx")`.
"""


# ----------------------------------------------------------------------------------------- import
def import_torch(folder: str, workdir: str, config_spec: str | None = None, log=print) -> str:
    """Exported folder -> a params-only JAX checkpoint at step 0 in ``workdir``
    (``vla_jax.train.checkpoint.write_checkpoint``), which a new run starts from with
    ``config.init.from_checkpoint=WORKDIR``. The training config is ``config_spec`` (``configs/pretrain.py:ARG``)
    or the one stored in config.json at export time."""
    from safetensors.numpy import load_file

    if not os.path.isfile(os.path.join(folder, tp.CONFIG_FILE)) or \
            not os.path.isfile(os.path.join(folder, tp.WEIGHTS_FILE)):
        raise ExportError(f"{folder} is not a PyTorch export (needs {tp.CONFIG_FILE} and {tp.WEIGHTS_FILE})")
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and available_steps(workdir):
        raise ExportError(f"--out={workdir} already has checkpoints; choose a new run directory")
    with open(os.path.join(folder, tp.CONFIG_FILE)) as f:
        saved = json.load(f)
    if config_spec:
        config = load_config(config_spec)
    elif (saved.get("export") or {}).get("train_config"):
        config = ml_collections.ConfigDict(saved["export"]["train_config"])
    else:
        raise ExportError(f"{folder}/{tp.CONFIG_FILE} has no training config; pass --config=configs/pretrain.py:ARG")
    target = make_config(config.model)
    have = to_torch.config_to_dict(to_torch.config_from_dict(saved))
    want = to_torch.config_to_dict(target)
    ignore = {"dtype", "remat", "scan"}
    diffs = [f"{sec}.{k}" if sec else k for sec, a, b in _sections(have, want) for k in sorted(set(a) | set(b))
             if k not in ignore and a.get(k) != b.get(k)]
    if diffs:
        raise ExportError(f"the training config does not match {folder}: {', '.join(diffs)} differ")
    path = os.path.join(folder, tp.WEIGHTS_FILE)
    if saved.get("torch_dtype", "float32") == "float32":
        arrays = load_file(path)
    else:
        from safetensors.torch import load_file as load_torch_file
        arrays = {k: v.float().numpy() for k, v in load_torch_file(path).items()}
    params = to_torch.torch_to_jax(arrays, target)
    norm_stats = None
    if os.path.isfile(os.path.join(folder, tp.NORM_STATS_FILE)):
        with open(os.path.join(folder, tp.NORM_STATS_FILE)) as f:
            norm_stats = json.load(f)
    out = write_checkpoint(workdir, params, config, norm_stats)
    log(f"[import] wrote {out} (step 0, {saved.get('torch_dtype', 'float32')} weights)")
    return out


def _sections(a: dict, b: dict):
    yield "", {k: v for k, v in a.items() if not isinstance(v, dict) and k != "export"}, \
        {k: v for k, v in b.items() if not isinstance(v, dict) and k != "export"}
    for sec in ("vit", "decoder"):
        yield sec, a[sec], b[sec]
