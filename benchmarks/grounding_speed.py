"""How many steps a backbone variant needs to learn "where is the object the instruction names".

    python benchmarks/grounding_speed.py --config=configs/pretrain.py:debug --steps=1500 \
        [--config.model.addons="('conv_stem',)"] [--scenes=12000] [--eval_every=250]

Trains the model's text loss alone on first frames of fresh single-arm scenes: the overhead image (one
camera) and the task instruction, answered by the target's ``<locRC>`` cell (vla_jax/sim/grounding_answers.py), the
skill closed-loop picking needs first (docs/experiments.md). Every ``--eval_every`` steps it prints the
validation accuracy (held-out scenes): the exact cell and within one cell. Scenes are rendered once
(about 1 s per 1,000) with the tokenizer of ``config.data``; AdamW with the config's lr, a warm-up of
100 steps (at most half of them) and a cosine decay over ``--steps``. A comparison of variants is a loop
over ``--config.model.*`` overrides.
"""

import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.platform import jax_defaults  # noqa: E402

jax_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vla_jax.config import flags_parser  # noqa: E402

config_flags.DEFINE_config_file("config", None, "training config, e.g. configs/pretrain.py:debug", lock_config=False)
flags.DEFINE_integer("steps", 1500, "training steps")
flags.DEFINE_integer("scenes", 12_000, "training scenes (first frames)")
flags.DEFINE_integer("val_scenes", 512, "held-out scenes")
flags.DEFINE_integer("batch_size", 32, "examples per step")
flags.DEFINE_integer("eval_every", 250, "steps between validation rows")
FLAGS = flags.FLAGS


def render_scenes(count: int, first_seed: int, image_size: int):
    """([N, R, R, 3] uint8 overhead images, instructions, target cells) of fresh single-arm scenes."""
    import numpy as np
    from PIL import Image

    from vla_jax.sim import TabletopEnv, sample_task
    from vla_jax.sim.grounding_answers import object_location

    env = TabletopEnv("single_arm", 96)
    camera = env.spec.cameras[0]
    images, prompts, answers = [], [], []
    for seed in range(first_seed, first_seed + count):
        task = sample_task(np.random.default_rng(seed))
        obs = env.reset(task, seed)
        image = Image.fromarray(obs["images"][camera.name]).resize((image_size, image_size), Image.BILINEAR)
        images.append(np.asarray(image))
        prompts.append(task.instruction)
        answers.append(object_location(env.world, camera, env.target))
    return np.stack(images), prompts, answers


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from vla_jax.data.settings import read_settings
    from vla_jax.data.tokenizer import Tokenizer
    from vla_jax.data.transforms import build_tokens
    from vla_jax.models.vla import VLA, make_config
    from vla_jax.models.summary import dummy_batch
    from vla_jax.sim.grounding_answers import GRID

    config = FLAGS.config
    config.model.num_cameras = 1  # the overhead camera: the only view that shows every object
    cfg = make_config(config.model)
    model = VLA(cfg)
    tokenizer = Tokenizer(read_settings(config).tokenizer)

    t0 = time.perf_counter()
    n, nv, size = FLAGS.scenes, FLAGS.val_scenes, cfg.image_size
    images, prompts, answers = render_scenes(n + nv, 50_000, size)
    print(f"rendered {n + nv} scenes in {time.perf_counter() - t0:.1f}s", flush=True)
    images = images.astype(np.float32) / 127.5 - 1.0
    fields = [build_tokens(tokenizer, p, a, cfg.max_text_len) for p, a in zip(prompts, answers)]
    text = {k: np.stack([f[i] for f in fields]) for i, k in enumerate(("tokens", "token_mask", "token_ar", "token_loss"))}
    cells = np.array([[int(a[4]), int(a[5])] for a in answers])
    template = {k: np.zeros(v.shape, v.dtype) for k, v in dummy_batch(cfg, batch_size=1).items()}

    def batch(idx, answers_in: bool = True):
        b = {k: np.repeat(v, len(idx), axis=0) for k, v in template.items()}
        b.update(images=images[idx][:, None], image_mask=np.ones((len(idx), 1), bool),
                 **{k: v[idx] for k, v in text.items()})
        if not answers_in:  # the prompt alone, as at inference
            keep = b["token_mask"] & ~b["token_ar"]
            b.update(tokens=np.where(keep, b["tokens"], 0), token_mask=keep)
        return {k: jnp.asarray(v) for k, v in b.items()}

    def loss_fn(params, b, rng):
        sums, counts = model.apply(params, b, rng, method=VLA.compute_loss)["text"]
        return sums.sum() / jnp.maximum(counts.sum(), 1.0)

    params = model.init(jax.random.key(config.seed), batch(np.arange(2)), jax.random.key(1), method=VLA.compute_loss)
    o = config.optimizer
    schedule = optax.warmup_cosine_decay_schedule(0.0, o.lr, min(100, FLAGS.steps // 2), FLAGS.steps,
                                                  o.lr * o.end_lr_factor)
    tx = optax.chain(optax.clip_by_global_norm(o.clip_norm),
                     optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, b, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, b, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def first_token(params, b):
        return model.apply(params, b, method=VLA.encode_prefix).last_logits.argmax(-1)

    first = tokenizer.encode("<loc00>")[0]
    val = np.arange(n, n + nv)
    rng = np.random.default_rng(0)
    addon_names = ",".join(a.name for a in cfg.addons) or "none"
    print(f"{platform.node()} | jax {jax.__version__} | add-ons {addon_names} | "
          f"{cfg.vit.num_patches} image tokens | batch {FLAGS.batch_size}")
    print("| step | train loss (answer + eos) | exact cell | within one cell | s |\n|---:|---:|---:|---:|---:|")
    losses, t0 = [], time.perf_counter()
    for step in range(1, FLAGS.steps + 1):
        params, opt_state, loss = train_step(params, opt_state, batch(rng.integers(0, n, FLAGS.batch_size)),
                                             jax.random.key(step))
        losses.append(float(loss))
        if step % FLAGS.eval_every == 0 or step == FLAGS.steps:
            pred = np.concatenate([np.asarray(first_token(params, batch(val[i:i + 128], answers_in=False)))
                                   for i in range(0, nv, 128)]) - first
            got = np.stack([pred // GRID, pred % GRID], axis=1)
            dist = np.where((pred >= 0) & (pred < GRID * GRID), np.abs(got - cells[val]).max(axis=1), GRID)
            print(f"| {step} | {np.mean(losses[-50:]):.3f} | {100 * np.mean(dist == 0):.1f}% | "
                  f"{100 * np.mean(dist <= 1):.1f}% | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=flags_parser)
