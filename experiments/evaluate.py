r"""Evaluates a trained workdir: test −ELBO and the importance-sampled NLL.

  python -m experiments.evaluate --workdir=workdirs/default --num_samples=5000

Writes `<workdir>/evaluation_<split>_k<k>.json` (never touching the run's own
files, even while it trains) and prints it; scores that are NaN/inf are
refused, not written. Useful to evaluate on a GPU what was trained elsewhere,
or with another k than the run's config.
"""

import json
import os
import time

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.train.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 5000, "k of the importance-sampled estimate (0: ELBO only).")
_CHUNK = flags.DEFINE_integer("chunk_size", 500, "Importance samples evaluated at once.")
_SPLIT = flags.DEFINE_enum("split", "test", ["validation", "test"], "Split to evaluate.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "Evaluate the first N examples (0: all).")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Examples per evaluation batch.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax.inference import evaluation  # pylint: disable=g-import-not-at-top
  from vae_jax.datasets import splits  # pylint: disable=g-import-not-at-top
  from vae_jax.run import train  # pylint: disable=g-import-not-at-top
  from vae_jax.run import workdir  # pylint: disable=g-import-not-at-top
  with cli.one_line_errors():
    if _NUM_SAMPLES.value < 0 or _CHUNK.value < 1 or _BATCH.value < 1 or _NUM_EXAMPLES.value < 0:
      raise ValueError("--num_samples and --num_examples must be ≥ 0, --chunk_size and --batch_size ≥ 1.")
    config, model, params = workdir.load_trained(_WORKDIR.value)
    config.eval.num_examples = _NUM_EXAMPLES.value
    images = splits.load_data(config, _SPLIT.value).images
    start = time.time()
    scores = evaluation.evaluate(
        model, params, images, jax.random.fold_in(jax.random.PRNGKey(config.seed), 3),
        batch_size=_BATCH.value, num_samples=(_NUM_SAMPLES.value or None) if model.stochastic else None,
        chunk_size=_CHUNK.value)
    train.check_finite_scores(scores, f"evaluating {_WORKDIR.value}")
    scores.update(split=_SPLIT.value, num_samples=_NUM_SAMPLES.value, seconds=time.time() - start,
                  device=str(jax.devices()[0].device_kind))
    path = os.path.join(workdir.resolve(_WORKDIR.value),
                        f"evaluation_{_SPLIT.value}_k{_NUM_SAMPLES.value}.json")
    workdir.write_json(path, scores)
  print(json.dumps(scores))


if __name__ == "__main__":
  cli.run(main)
