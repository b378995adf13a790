"""The experiment configuration: every field, its default, and its checks.

Experiment files in `experiments/configs/` start from `default_config()` and
change what they need. The returned `ml_collections.ConfigDict` is
type-safe (assigning a string to an int field fails) and, once locked, a typo
in a field name fails too (`--config.model.latent_dm=2` is an error).
`validate` checks the values and raises `ValueError` with a one-line message
naming the field, the problem and the fix.
"""

from __future__ import annotations

import math

import ml_collections

OBJECTIVES = ("elbo", "iwae", "ae")
ESTIMATORS = ("reparam", "stl", "dreg")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "exponential", "warmup_cosine")
NAN_POLICIES = ("stop", "skip")


def default_config() -> ml_collections.ConfigDict:
  """The default experiment: an MLP VAE 784-512-256-32 on MNIST."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "mnist"          # mnist | fashion_mnist | binarized_mnist | dynamic_binarized_mnist
  config.data.raw_data_dir = ""       # offline: folder <name>/<raw files>; "" -> $VAE_JAX_RAW_DATA_DIR
  config.data.data_dir = ""           # TFDS data_dir; "" -> $TFDS_DATA_DIR or ~/tensorflow_datasets
  config.data.train_subset = 0        # >0: train on the first N training examples only (tests, quick runs)
  config.data.exclude_label = -1      # ≥0: drop this class from every split (anomaly detection); -1 keeps all
  config.data.train_on_validation = False  # True: train on train ∪ validation (60000 MNIST images, the IWAE paper's protocol); validation scores are then not held out

  config.model = ml_collections.ConfigDict()
  config.model.architecture = "mlp"   # mlp | conv
  config.model.hidden_widths = (512, 256)
  config.model.latent_dim = 32
  config.model.activation = "relu"
  config.model.likelihood = "bernoulli"  # bernoulli | gaussian | gaussian_learned | continuous_bernoulli
  config.model.gaussian_scale = 0.1
  config.model.conv_channels = (32, 64)
  config.model.upper_latent_dims = ()     # (d₂, …, d_L) of stochastic layers above z₁; () = one layer
  config.model.upper_hidden_widths = ()   # hidden widths of every network between two stochastic layers
  config.model.prior = "standard_normal"  # standard_normal | mixture | vampprior (on the top latent)
  config.model.prior_components = 500     # K of the mixture / VampPrior pseudo-inputs
  config.model.flow = "none"              # none | planar | iaf (on q(z₁|x))
  config.model.flow_length = 0            # number of flow steps
  config.model.flow_hidden_widths = (320, 320)  # hidden widths of each IAF step's MADE

  config.objective = ml_collections.ConfigDict()
  config.objective.name = "elbo"      # elbo | iwae | ae
  config.objective.num_samples = 1    # k of the IWAE bound
  config.objective.beta = 1.0         # β-VAE weight of the KL term
  config.objective.kl_warmup_steps = 0
  config.objective.estimator = "reparam"  # reparam | stl | dreg (gradient estimator of the encoder)

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_steps = 0
  config.optimizer.decay_rate = 0.1   # exponential: lr · decay_rate^(step / total_steps)
  config.optimizer.momentum = 0.9
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 1e-4  # adamw only
  config.optimizer.grad_clip_norm = 0.0  # 0 disables clipping

  config.training = ml_collections.ConfigDict()
  config.training.batch_size = 128
  config.training.num_epochs = 20
  config.training.steps_per_scan = 50     # steps fused into one lax.scan; 1 = per-step loop
  config.training.log_every_steps = 50
  config.training.checkpoint_every_steps = 1000
  config.training.keep_checkpoints = 3
  config.training.keep_checkpoints_every_steps = 0  # >0: also keep every checkpoint at a multiple of this step (curves over training)
  config.training.eval_every_epochs = 1
  config.training.nan_policy = "stop"     # stop | skip
  config.training.ema_decay = 0.0         # >0: keep an exponential moving average of θ (evaluated, checkpointed)
  config.training.progress_bar = True
  config.training.tensorboard = True

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 500
  config.eval.num_examples = 0          # 0 = the whole split
  config.eval.is_num_samples = 5000     # k of the final importance-sampled log-likelihood; 0 skips it
  config.eval.is_chunk_size = 500
  config.eval.write_images = True
  config.eval.write_figures = True      # figures of the trained model at the end of training

  config.logging = ml_collections.ConfigDict()  # trackers beside metrics.jsonl (vae_jax.run.trackers)
  config.logging.wandb = False
  config.logging.wandb_project = "vae_jax"
  config.logging.wandb_mode = "online"  # online | offline
  config.logging.mlflow_uri = ""
  config.logging.mlflow_experiment = "vae_jax"
  return config


def update_from_dict(config: ml_collections.ConfigDict, saved: dict) -> None:
  """Writes saved values (e.g. a run's config.json) into `config`; JSON lists become tuples.

  Fields the saved dict lacks (added to the defaults later) keep their value.
  """
  for name, value in saved.items():
    if isinstance(value, dict) and isinstance(config.get(name), ml_collections.ConfigDict):
      update_from_dict(config[name], value)
    else:
      value = tuple(value) if isinstance(value, list) else value
      if name in config and isinstance(config[name], float) and isinstance(value, int):
        value = float(value)
      config[name] = value


def _fail(field: str, value, problem: str, fix: str):
  raise ValueError(f"config.{field}={value!r}: {problem}; {fix}.")


def _value(config: ml_collections.ConfigDict, field: str):
  for name in field.split("."):
    config = config[name]
  return config


def _finite_floats(config: ml_collections.ConfigDict, prefix: str = "") -> None:
  """Every float of the config (in tuples too) must be finite: NaN/inf never make sense."""
  for name, value in config.items():
    field = f"{prefix}{name}"
    if isinstance(value, ml_collections.ConfigDict):
      _finite_floats(value, field + ".")
    elif any(isinstance(v, float) and not math.isfinite(v)
             for v in (value if isinstance(value, (tuple, list)) else (value,))):
      _fail(field, value, "must be finite", "give a finite number")


def _one_of(config, field: str, choices, problem: str = "unknown value") -> None:
  if _value(config, field) not in choices:
    _fail(field, _value(config, field), problem, f"choose one of {', '.join(choices)}")


def _at_least(config, field: str, low, fix: str, problem: str | None = None) -> None:
  value = _value(config, field)
  if not value >= low:   # also refuses NaN
    _fail(field, value, problem or f"must be ≥ {low}", fix)


def _above(config, field: str, low, fix: str) -> None:
  value = _value(config, field)
  if not value > low:
    _fail(field, value, f"must be > {low}", fix)


def _in_unit_interval(config, field: str, fix: str) -> None:
  value = _value(config, field)
  if not 0 <= value < 1:
    _fail(field, value, "must be in [0, 1)", fix)


def _positive_ints(config, field: str, fix: str) -> None:
  value = _value(config, field)
  if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
    _fail(field, value, "must be whole numbers ≥ 1", fix)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every value's range, before anything is written (raises ValueError).

  One line per problem: `config.<field>=<value>: <problem>; <fix>.` A new field
  gets one line here (floats are checked finite for every field already).
  """
  from vae_jax.nn import activations  # pylint: disable=g-import-not-at-top
  from vae_jax.datasets import data  # pylint: disable=g-import-not-at-top
  _finite_floats(config)
  if not 0 <= config.seed < 2**32:
    _fail("seed", config.seed, "must be in [0, 2³²) (jax.random.PRNGKey wraps it)",
          "give a non-negative seed below 4294967296")
  _one_of(config, "data.name", data.DATASETS, "unknown dataset")
  _at_least(config, "data.train_subset", 0, "use 0 for the whole split")
  if not -1 <= config.data.exclude_label <= 9:
    _fail("data.exclude_label", config.data.exclude_label, "must be a class 0–9 or -1", "use -1 to keep every class")

  _at_least(config, "model.latent_dim", 1, "give a positive latent dimension")
  _positive_ints(config, "model.hidden_widths", "give layer widths such as (512, 256)")
  _positive_ints(config, "model.conv_channels", "give channel counts such as (32, 64)")
  _above(config, "model.gaussian_scale", 0, "give the Gaussian likelihood's standard deviation, e.g. 0.1")
  activations.get(config.model.activation)

  _one_of(config, "objective.name", OBJECTIVES, "unknown objective")
  _at_least(config, "objective.num_samples", 1, "use k=1 for the ELBO", "k must be ≥ 1")
  _at_least(config, "objective.beta", 0, "use β=1 for the ELBO", "β must be ≥ 0")
  _at_least(config, "objective.kl_warmup_steps", 0, "use 0 for no warm-up")
  _one_of(config, "objective.estimator", ESTIMATORS, "unknown estimator")

  _one_of(config, "optimizer.name", OPTIMIZERS, "unknown optimizer")
  _one_of(config, "optimizer.schedule", SCHEDULES, "unknown schedule")
  _above(config, "optimizer.learning_rate", 0, "give a positive learning rate")
  _at_least(config, "optimizer.warmup_steps", 0, "use 0 for no warm-up")
  _above(config, "optimizer.decay_rate", 0, "give the factor the learning rate decays by, e.g. 0.1")
  _in_unit_interval(config, "optimizer.momentum", "use e.g. 0.9 (0 is plain SGD)")
  _in_unit_interval(config, "optimizer.b1", "use Adam's default 0.9")
  _in_unit_interval(config, "optimizer.b2", "use Adam's default 0.999")
  _above(config, "optimizer.eps", 0, "use Adam's default 1e-8")
  _at_least(config, "optimizer.weight_decay", 0, "use 0 for no weight decay")
  _at_least(config, "optimizer.grad_clip_norm", 0, "use 0 to disable clipping")

  for field in ("batch_size", "num_epochs", "steps_per_scan", "log_every_steps",
                "checkpoint_every_steps", "keep_checkpoints", "eval_every_epochs"):
    _at_least(config, f"training.{field}", 1, "give a positive integer")
  _at_least(config, "training.keep_checkpoints_every_steps", 0,
            "use 0 to keep only the newest training.keep_checkpoints")
  _one_of(config, "training.nan_policy", NAN_POLICIES, "unknown policy")
  _in_unit_interval(config, "training.ema_decay", "use e.g. 0.999, or 0 to disable the average")

  _at_least(config, "eval.batch_size", 1, "give a positive integer")
  _at_least(config, "eval.num_examples", 0, "use 0 for the whole split")
  _at_least(config, "eval.is_num_samples", 0, "use 0 to skip the importance-sampled estimate",
            "k must be ≥ 0")
  _at_least(config, "eval.is_chunk_size", 1, "give a positive integer")
  from vae_jax.run import trackers  # pylint: disable=g-import-not-at-top
  trackers.check_config(config.logging)


# One line per field: `--show_config` and docs/CONFIG.md print these, and
# tests/test_config_docs.py fails for a field without one (or a doc without a field).
FIELD_DOCS = {
    "seed": "Seed of every random draw: initialisation, epoch order, step keys, evaluation keys.",
    "data.name": "Dataset: mnist | fashion_mnist | binarized_mnist | dynamic_binarized_mnist.",
    "data.raw_data_dir": "Offline: folder <name>/<original files>; '' uses $VAE_JAX_RAW_DATA_DIR, else TFDS downloads.",
    "data.data_dir": "TFDS data_dir (prepared data and the npz cache); '' uses $TFDS_DATA_DIR or ~/tensorflow_datasets.",
    "data.train_subset": "> 0: train on the first N training examples only (tests, quick runs); 0 uses all.",
    "data.exclude_label": "≥ 0: drop this class from every split (anomaly detection); -1 keeps every class.",
    "data.train_on_validation": "Train on train ∪ validation (the IWAE paper's 60000 images); validation scores are then not held out.",
    "model.architecture": "Encoder/decoder: mlp (dense φ-layers) | conv (conv φ-layers, then dense).",
    "model.hidden_widths": "Encoder hidden widths (the decoder mirrors them), checked against Lemmas 2.1.1/2.1.2.",
    "model.latent_dim": "d, the latent dimension (the encoder outputs μ and log σ², 2d numbers).",
    "model.activation": "φ of every hidden layer: a name registered in vae_jax.nn.activations (relu, elu, tanh, ...).",
    "model.likelihood": "Decoder p(x|z): bernoulli | gaussian | gaussian_learned | continuous_bernoulli.",
    "model.gaussian_scale": "σ of the fixed-variance gaussian likelihood.",
    "model.conv_channels": "Channels of the conv layers (architecture=conv), each halving the resolution.",
    "model.upper_latent_dims": "(d₂, …, d_L) of stochastic layers above z₁; () for one stochastic layer.",
    "model.upper_hidden_widths": "Hidden widths of every network between two stochastic layers (q(z_{l+1}|z_l), p(z_l|z_{l+1})).",
    "model.prior": "Prior on the top latent: standard_normal | mixture (learned mixture of Gaussians) | vampprior.",
    "model.prior_components": "K: components of the mixture prior, pseudo-inputs of the VampPrior.",
    "model.flow": "Flow on q(z₁|x): none | planar | iaf (inverse autoregressive).",
    "model.flow_length": "Number of flow steps (≥ 1 with a flow).",
    "model.flow_hidden_widths": "Hidden widths of the MADE in each IAF step.",
    "objective.name": "Training objective: elbo | iwae (k-sample bound) | ae (deterministic autoencoder).",
    "objective.num_samples": "k, samples per example of the IWAE bound (1 for the ELBO).",
    "objective.beta": "β, weight of the KL term (β-VAE); 1 is the ELBO.",
    "objective.kl_warmup_steps": "> 0: the KL weight rises linearly from 0 to β over N steps; 0 disables warm-up.",
    "objective.estimator": "Encoder gradient estimator: reparam | stl (sticking the landing) | dreg (doubly reparameterised; IWAE only).",
    "optimizer.name": "Optimizer: sgd | momentum | adam | adamw.",
    "optimizer.learning_rate": "Peak learning rate.",
    "optimizer.schedule": "Learning-rate schedule: constant | cosine | exponential | warmup_cosine.",
    "optimizer.warmup_steps": "Linear warm-up steps of warmup_cosine.",
    "optimizer.decay_rate": "exponential schedule: lr · decay_rate^(step / total_steps).",
    "optimizer.momentum": "Momentum of the momentum optimizer.",
    "optimizer.b1": "Adam/AdamW β₁.",
    "optimizer.b2": "Adam/AdamW β₂.",
    "optimizer.eps": "Adam/AdamW ε.",
    "optimizer.weight_decay": "Decoupled weight decay (adamw only).",
    "optimizer.grad_clip_norm": "> 0: clip gradients to this global norm; 0 disables clipping.",
    "training.batch_size": "Global batch size (a multiple of the device count).",
    "training.num_epochs": "Epochs to train; rerunning with more resumes and trains on.",
    "training.steps_per_scan": "Steps fused into one jitted lax.scan; 1 is a per-step loop.",
    "training.log_every_steps": "Write train metrics every N steps (metrics.jsonl, TensorBoard, trackers).",
    "training.checkpoint_every_steps": "Write a checkpoint at the first block end past every N steps (also at every evaluation and the end).",
    "training.keep_checkpoints": "Keep the newest N checkpoints.",
    "training.keep_checkpoints_every_steps": "> 0: also keep every checkpoint at a multiple of N steps (curves over training).",
    "training.eval_every_epochs": "Evaluate on the validation split every N epochs.",
    "training.nan_policy": "On a NaN/inf loss or gradient: stop (naming the last good checkpoint) | skip (drop that update).",
    "training.ema_decay": "δ of an exponential moving average of θ, evaluated and checkpointed beside θ; 0 disables it.",
    "training.progress_bar": "Show a tqdm progress bar.",
    "training.tensorboard": "Write TensorBoard event files to <workdir>/tensorboard/.",
    "eval.batch_size": "Examples per evaluation batch (rounded up to a multiple of the device count).",
    "eval.num_examples": "> 0: evaluate on the first N validation/test examples; 0 uses the whole split.",
    "eval.is_num_samples": "k of the final importance-sampled log-likelihood (IS-NLL); 0 skips it.",
    "eval.is_chunk_size": "Importance samples evaluated at once (memory; does not change the estimate).",
    "eval.write_images": "Write reconstruction and sample grids to <workdir>/images/ at every evaluation.",
    "eval.write_figures": "Write figures of the trained model to <workdir>/figures/ at the end.",
    "logging.wandb": "Also log metrics to Weights & Biases (pip install -e \".[trackers]\").",
    "logging.wandb_project": "W&B project name.",
    "logging.wandb_mode": "W&B mode: online | offline (synced later with `wandb sync`).",
    "logging.mlflow_uri": "Non-empty: also log to MLflow at this tracking URI (e.g. file:./mlruns or http://host:5000).",
    "logging.mlflow_experiment": "MLflow experiment name.",
}


def documented_fields(config: ml_collections.ConfigDict) -> list[tuple[str, object, str]]:
  """(dotted name, value, doc) of every field of `config`, in the order of FIELD_DOCS."""
  def leaves(node, prefix):
    for name, value in node.items():
      if isinstance(value, ml_collections.ConfigDict):
        yield from leaves(value, f"{prefix}{name}.")
      else:
        yield f"{prefix}{name}", value, FIELD_DOCS.get(f"{prefix}{name}", "")
  order = {name: i for i, name in enumerate(FIELD_DOCS)}
  return sorted(leaves(config, ""), key=lambda field: (order.get(field[0], len(order)), field[0]))
