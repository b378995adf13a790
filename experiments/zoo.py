r"""The model zoo from the command line: export a finished workdir, list the entries.

  python -m experiments.zoo --workdir=workdirs/iwae/iwae_1layer_k5 --name=iwae_1layer_k5 [--dtype=float16]
  python -m experiments.zoo --list

An entry (`zoo/<name>/`: params.npz, config.json, results.json, entry.json;
see `vae_jax.run.zoo`) is then usable without training:
`python -m experiments.evaluate --pretrained=<name>`, and --pretrained of
experiments.figures and experiments.applications. An existing entry is never
overwritten.
"""

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished workdir (holding results.json) to export.")
_NAME = flags.DEFINE_string("name", None, "The entry's name, e.g. iwae_1layer_k5.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "float16"], "Storage dtype of the parameters.")
_ZOO = flags.DEFINE_string("zoo", None, "The zoo folder (default $VAE_JAX_ZOO_DIR or zoo/).")
_LIST = flags.DEFINE_bool("list", False, "List the entries and their recorded test NLL.")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
  from vae_jax.run import zoo  # pylint: disable=g-import-not-at-top
  with cli.one_line_errors():
    if _LIST.value:
      for name in zoo.available(_ZOO.value):
        print(f"{name}: test NLL {zoo.recorded_results(name, _ZOO.value).get('nll')}")
      return
    if not _WORKDIR.value or not _NAME.value:
      raise ValueError("give --workdir=<finished workdir> and --name=<entry name> to export, or --list.")
    print(zoo.export(_WORKDIR.value, _NAME.value, _DTYPE.value, _ZOO.value))


if __name__ == "__main__":
  cli.run(main)
