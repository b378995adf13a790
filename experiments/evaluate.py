r"""Evaluates a trained workdir: test −ELBO and the importance-sampled NLL.

  python -m experiments.evaluate --workdir=workdirs/default --num_samples=5000
  python -m experiments.evaluate --pretrained=iwae_1layer_k5     # a model of the zoo (zoo/)

Writes `<workdir>/evaluation_<split>_k<k>_n<N|all>_seed<s>.json`, named by every
setting that changes the numbers (so another call never overwrites it, and never
touches the run's own files, even while it trains), and prints it; scores that are
NaN/inf are refused, not written. Useful to evaluate on a GPU what was trained elsewhere,
or with another k than the run's config.
A --pretrained model's scores are printed only, beside the test NLL recorded
when it was trained (`recorded_nll`).
"""

import json
import os
import time

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.train.")
_PRETRAINED = flags.DEFINE_string("pretrained", None, "A model of the zoo (vae_jax.run.zoo), e.g. iwae_1layer_k5.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 5000, "k of the importance-sampled estimate (0: ELBO only).")
_CHUNK = flags.DEFINE_integer("chunk_size", 500, "Importance samples evaluated at once.")
_SPLIT = flags.DEFINE_enum("split", "test", ["validation", "test"], "Split to evaluate.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "Evaluate the first N examples (0: all).")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Examples per evaluation batch.")
_SEED = flags.DEFINE_integer("seed", None, "Seed of the evaluation's samples (default: the run's seed).")
flags.mark_flags_as_mutual_exclusive(["workdir", "pretrained"], required=True)


def output_name(split: str, num_samples: int, num_examples: int, seed: int) -> str:
  """The file name of an evaluation: every setting that changes its numbers (batch and chunk sizes do not)."""
  return f"evaluation_{split}_k{num_samples}_n{num_examples or 'all'}_seed{seed}.json"


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax.inference import evaluation  # pylint: disable=g-import-not-at-top
  from vae_jax.datasets import splits  # pylint: disable=g-import-not-at-top
  from vae_jax.run import train  # pylint: disable=g-import-not-at-top
  from vae_jax.run import workdir  # pylint: disable=g-import-not-at-top
  from vae_jax.run import zoo  # pylint: disable=g-import-not-at-top
  with cli.one_line_errors():
    if _NUM_SAMPLES.value < 0 or _CHUNK.value < 1 or _BATCH.value < 1 or _NUM_EXAMPLES.value < 0:
      raise ValueError("--num_samples and --num_examples must be ≥ 0, --chunk_size and --batch_size ≥ 1.")
    if _PRETRAINED.value:
      config, model, params = zoo.load_pretrained(_PRETRAINED.value)
    else:
      config, model, params = workdir.load_trained(_WORKDIR.value)
    config.eval.num_examples = _NUM_EXAMPLES.value
    seed = config.seed if _SEED.value is None else _SEED.value
    images = splits.load_data(config, _SPLIT.value).images
    start = time.time()
    scores = evaluation.evaluate(
        model, params, images, jax.random.fold_in(jax.random.PRNGKey(seed), 3),
        batch_size=_BATCH.value, num_samples=(_NUM_SAMPLES.value or None) if model.stochastic else None,
        chunk_size=_CHUNK.value)
    train.check_finite_scores(scores, f"evaluating {_PRETRAINED.value or _WORKDIR.value}")
    scores.update(split=_SPLIT.value, num_samples=_NUM_SAMPLES.value, seed=seed,
                  seconds=time.time() - start, device=str(jax.devices()[0].device_kind))
    if _PRETRAINED.value:
      scores.update(pretrained=_PRETRAINED.value, recorded_nll=zoo.recorded_results(_PRETRAINED.value).get("nll"))
      print(json.dumps(scores))
      return
    path = os.path.join(workdir.resolve(_WORKDIR.value), output_name(_SPLIT.value, _NUM_SAMPLES.value,
                                                                     _NUM_EXAMPLES.value, seed))
    workdir.write_json(path, scores)
  print(json.dumps(scores))


if __name__ == "__main__":
  cli.run(main)
