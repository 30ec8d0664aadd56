"""``policy.onnx``: the whole inference path of the PyTorch policy as one ONNX graph.

Flow head: inputs ``images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask, noise``
-> ``actions`` [B, H, A] after ``num_steps`` Euler steps (prefix encoded once into the KV cache, the
suffix steps unrolled inside the graph). Discrete head: the same inputs without ``noise`` -> ``actions``
and ``action_tokens`` [B, H * A] (greedy decoding unrolled; the graph grows with H * A).
The batch dimension is dynamic (``torch.export.Dim``); everything else is fixed by ``config.json``.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + ``onnxscript``), opset 18 by default
(the exporter emits 18 up to the installed onnx's newest; onnxruntime must load it too). The graph is always
float32: onnxruntime's CPU provider has no bfloat16 kernels for most of these ops.
"""

from __future__ import annotations

import copyreg
import functools
import importlib.metadata
import os

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree

from vla_jax.export import torch_port as tp

ONNX_FILE = "policy.onnx"
DEFAULT_OPSET = 18
EXPORTER_MIN_OPSET = 18  # the dynamo exporter's own opset; newer ones by onnx's version converter
FLOW_INPUTS = ("images", "image_mask", "tokens", "token_mask", "state", "state_mask", "action_dim_mask", "noise")
INPUT_DTYPES = {"images": np.float32, "image_mask": np.bool_, "tokens": np.int32, "token_mask": np.bool_,
                "state": np.float32, "state_mask": np.bool_, "action_dim_mask": np.bool_, "noise": np.float32}


# ExportedProgram.run_decompositions (inside torch.onnx.export) deep-copies the program's tree specs, and copying
# pytree's LeafSpec singleton calls its deprecated constructor (a FutureWarning per export, torch 2.13). A copy of
# the leaf spec is the singleton itself, so copy (and pickle) it as such: the deprecated constructor is never called.
copyreg.pickle(_pytree.LeafSpec, lambda spec: (_pytree.treespec_leaf, ()))


class OpsetError(ValueError):
    """An ONNX opset that the exporter or onnxruntime cannot handle; one line."""


def exporter_max_opset() -> int:
    """The newest opset the exporter emits: the installed onnx's (its version converter writes it)."""
    import onnx

    return onnx.defs.onnx_opset_version()


def exporter_info(opset: int) -> str:
    """What wrote ``policy.onnx``, for the folder's config.json and model card."""
    return (f"torch.onnx dynamo exporter, torch {torch.__version__.split('+')[0]}, "
            f"onnxscript {importlib.metadata.version('onnxscript')}, opset {opset}")


@functools.lru_cache(maxsize=None)
def runtime_max_opset() -> int:
    """The newest default-domain opset this onnxruntime loads (probed with a one-node model)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    best = 0
    for opset in range(7, onnx.defs.onnx_opset_version() + 1):
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - any load failure means "not supported"
            break
        best = opset
    return best


def check_opset(opset: int) -> None:
    """Raises OpsetError (one line) unless both the exporter and onnxruntime support ``opset``."""
    import onnxruntime as ort

    rt, top = runtime_max_opset(), exporter_max_opset()
    usable = f"use --opset between {EXPORTER_MIN_OPSET} and {min(rt, top)} (default {DEFAULT_OPSET})"
    if opset > rt:
        raise OpsetError(f"--opset={opset} is not supported by onnxruntime {ort.__version__} (max opset {rt}); "
                         + usable)
    if not EXPORTER_MIN_OPSET <= opset <= top:
        raise OpsetError(f"--opset={opset} is outside what torch {torch.__version__.split('+')[0]}'s dynamo ONNX "
                         f"exporter emits ({EXPORTER_MIN_OPSET}..{top}); " + usable)


class FlowGraph(nn.Module):
    """Observation + noise -> actions after ``num_steps`` Euler steps (the traced module)."""

    def __init__(self, policy: tp.VLAPolicy, num_steps: int):
        super().__init__()
        self.policy, self.num_steps = policy, num_steps

    def forward(self, images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask, noise):
        return self.policy.sample_flow(images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask,
                                       noise, self.num_steps)


class DiscreteGraph(nn.Module):
    """Observation -> (actions, action_tokens) by greedy decoding of H * A action-bin tokens."""

    def __init__(self, policy: tp.VLAPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask):
        p, c = self.policy, self.policy.config
        h, a, vocab = c["action_horizon"], c["max_action_dim"], c["decoder"]["vocab_size"]
        out = p.greedy_decode(images, image_mask, tokens, token_mask, state, state_mask, h * a)
        bins = torch.clamp(vocab - 1 - out, 0, tp.NUM_BINS - 1)
        values = -1.0 + (bins.float() + 0.5) * (2.0 / tp.NUM_BINS)
        valid = action_dim_mask[:, None, :].expand(-1, h, a).reshape(-1, h * a)
        rank = torch.clamp(torch.cumsum(valid.long(), dim=1) - 1, min=0)
        flat = torch.where(valid, torch.gather(values, 1, rank), torch.zeros_like(values))
        return flat.reshape(-1, h, a), out.to(torch.int32)


def input_names(config: dict) -> tuple[str, ...]:
    return FLOW_INPUTS if config["action_head"] == "flow" else FLOW_INPUTS[:-1]


def example_inputs(config: dict, batch_size: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random valid inputs for tracing / tests (numpy, batch.py dtypes)."""
    rng = np.random.default_rng(seed)
    b, c, r = batch_size, config["num_cameras"], config["image_size"]
    l, s, h, a = config["max_text_len"], config["max_state_dim"], config["action_horizon"], config["max_action_dim"]
    out = {
        "images": rng.uniform(-1, 1, (b, c, r, r, 3)).astype(np.float32),
        "image_mask": np.ones((b, c), bool),
        "tokens": rng.integers(1, min(200, config["decoder"]["vocab_size"]), (b, l)).astype(np.int32),
        "token_mask": np.arange(l)[None].repeat(b, 0) < max(1, l // 2),
        "state": rng.standard_normal((b, s)).astype(np.float32),
        "state_mask": np.ones((b, s), bool),
        "action_dim_mask": np.ones((b, a), bool),
        "noise": rng.standard_normal((b, h, a)).astype(np.float32),
    }
    return {k: out[k] for k in input_names(config)}


def export_onnx(policy: tp.VLAPolicy, path: str, num_steps: int | None = None, opset: int = DEFAULT_OPSET) -> str:
    """Traces ``policy`` (converted to float32) into ``path``. Returns the path."""
    check_opset(opset)
    config = policy.config
    if policy.compute_dtype != torch.float32:  # e.g. a bfloat16 export: the graph still runs in float32
        f32 = tp.VLAPolicy(config, dtype=torch.float32)
        f32.load_state_dict({k: v.float() for k, v in policy.state_dict().items()})
        policy = f32
    policy = policy.eval()
    if config["action_head"] == "flow":
        graph: nn.Module = FlowGraph(policy, int(num_steps or config["num_flow_steps"]))
        outputs = ["actions"]
    else:
        graph = DiscreteGraph(policy)
        outputs = ["actions", "action_tokens"]
    return trace(graph, example_inputs(config, batch_size=2), outputs, path, opset)


def trace(graph: nn.Module, inputs: dict[str, np.ndarray], outputs: list[str], path: str,
          opset: int = DEFAULT_OPSET) -> str:
    """Exports ``graph`` called on ``inputs`` (numpy, named in call order, batch-first) into ``path`` with the
    named ``outputs``; axis 0 of every input and output is the dynamic batch, named ``batch``. Inputs the graph
    does not read (pi0.5: ``state``) are dropped. Returns the path."""
    from onnx_ir.passes.common import ClearMetadataAndDocStringPass

    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())
    # One named Dim on the first input; the others are Dim.DYNAMIC, which torch.export ties to it (equal sizes).
    # Naming it on every input makes the exporter warn once per input that the shared name is not reused.
    dynamic = tuple({0: torch.export.Dim("batch", min=1) if i == 0 else torch.export.Dim.DYNAMIC}
                    for i in range(len(args)))
    with torch.no_grad():
        program = torch.onnx.export(graph.eval(), args, dynamo=True, opset_version=opset, input_names=list(inputs),
                                    output_names=outputs, dynamic_shapes=dynamic, optimize=False, verbose=False)
    model = program.model
    for value in [v for v in model.graph.inputs if not v.uses()]:
        model.graph.inputs.remove(value)
    ClearMetadataAndDocStringPass()(model)  # per-node stack traces: 3x the file size, local paths
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    program.save(path)
    return path


def onnx_session(path: str, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run_onnx(session, inputs: dict) -> np.ndarray:
    """Runs ``policy.onnx`` on numpy inputs (extra keys ignored, dtypes cast to the graph's); returns actions."""
    feed = {i.name: np.asarray(inputs[i.name]).astype(INPUT_DTYPES[i.name]) for i in session.get_inputs()}
    return session.run(["actions"], feed)[0]
