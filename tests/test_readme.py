"""README.md and BUILD.md run as written.

Every ```python block of README.md is executed as it stands (those that train
are marked slow); every command in a ```bash block of README.md and BUILD.md
is parsed: a `python -m <module>` or `python <file>.py` must exist and know
each flag it is given, `--config=<file>` must exist, `--config.<field>` must
be a config field and `pip install -e ".[extra]"` an extra of setup.py.
"""
import importlib.util
import re
import shlex

import pytest

from conftest import REPO
from vae_jax import config as config_lib

ABSL_FLAGS = {"help", "helpfull", "helpshort", "v", "verbosity", "logtostderr", "alsologtostderr"}


def code_blocks(name: str):
  """(language, code, line number) of every fenced block of REPO/name, indented ones included."""
  blocks, lines, current = [], (REPO / name).read_text().splitlines(), None
  for number, line in enumerate(lines, 1):
    fence = re.match(r"\s*```(\w*)\s*$", line)
    if fence and current is None:
      current = (fence.group(1), [], number, len(line) - len(line.lstrip()))
    elif fence:
      blocks.append((current[0], "\n".join(l[current[3]:] for l in current[1]), current[2]))
      current = None
    elif current is not None:
      current[1].append(line)
  return blocks


PYTHON = [(code, line) for lang, code, line in code_blocks("README.md") if lang == "python"]
BASH = [(name, code, line) for name in ("README.md", "BUILD.md")
        for lang, code, line in code_blocks(name) if lang == "bash"]


def _trains(code: str) -> bool:
  return any(call in code for call in ("seeds.train(", "train_and_evaluate(", "sweep.run("))


@pytest.mark.parametrize("code", [
    pytest.param(code, id=f"README.md:{line}", marks=[pytest.mark.slow] if _trains(code) else [])
    for code, line in PYTHON])
def test_readme_python_block_runs(code, raw_data, tfds_data_dir, monkeypatch, tmp_path):
  monkeypatch.setenv("VAE_JAX_RAW_DATA_DIR", str(raw_data))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_data_dir))
  monkeypatch.chdir(tmp_path)             # whatever a snippet writes lands here
  monkeypatch.syspath_prepend(str(REPO))  # `from experiments ...` as from the repository root
  namespace = {"__name__": "readme"}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  if "get_sweep" in namespace:             # a block that only defines the sweep: build it
    assert namespace["get_sweep"]()


def _commands(code: str):
  """Each simple command of a bash block: continuations joined, comments dropped."""
  code = re.sub(r"\\\n\s*", " ", code)
  for line in code.splitlines():
    words = shlex.split(line, comments=True)
    command = []
    for word in words + [";"]:
      if word in (";", "&&", "||", "|", "&", "do", "done", "then", "fi") or word.endswith(";"):
        if word.endswith(";") and word != ";":
          command.append(word[:-1])
        if command:
          yield command
        command = []
      else:
        command.append(word)


def _flags_of(path) -> set:
  source = path.read_text()
  return (set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source))
          | set(re.findall(r"add_argument\(\s*\"--([\w-]+)\"", source)) | ABSL_FLAGS)


def _check(command):
  """Problems of one command (an empty list if it refers only to what exists)."""
  while command and re.match(r"^\w+=", command[0]):   # VAR=value prefixes
    command = command[1:]
  if command[:3] == ["pip", "install", "-e"] and len(command) > 3:
    extras = re.search(r"\[(.*)\]", command[3])
    setup = (REPO / "setup.py").read_text()
    return [f"extra {e!r} not in setup.py" for e in (extras.group(1).split(",") if extras else [])
            if f'"{e}":' not in setup]
  if not command or command[0] != "python":
    return []
  if command[1] == "-c":
    return []
  if command[1] == "-m":
    module, args = command[2], command[3:]
    if module in ("pytest", "venv"):
      return []
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin.startswith(str(REPO)):
      return [f"no module {module} in the repository"]
    path = REPO / spec.origin[len(str(REPO)) + 1:]
  else:
    path, args = REPO / command[1], command[2:]
    if not path.exists():
      return [f"no file {command[1]}"]
  known, problems = _flags_of(path), []
  for arg in args:
    arg = arg.strip("[]")
    flag = re.match(r"^--?([\w.-]+)(?:=(.*))?$", arg)
    if arg == "--" or not flag:
      continue
    name, value = flag.groups()
    if name.startswith("config."):
      if name[len("config."):] not in config_lib.FIELD_DOCS:
        problems.append(f"{arg}: no config field {name[len('config.'):]}")
    elif name.removeprefix("no") not in known:
      problems.append(f"{arg}: {path.relative_to(REPO)} defines no flag {name}")
    elif name == "config" and value and not (REPO / value.split(":")[0]).exists():
      problems.append(f"{arg}: no config file {value.split(':')[0]}")
  return problems


@pytest.mark.parametrize("name, code", [pytest.param(name, code, id=f"{name}:{line}")
                                        for name, code, line in BASH])
def test_bash_block_refers_to_what_exists(name, code):
  problems = [p for command in _commands(code) for p in _check(command)]
  assert not problems, f"{name}: {problems}"


def test_the_checker_catches_what_it_should():
  assert _check(["python", "-m", "experiments.train", "--config=experiments/configs/nope.py"])
  assert _check(["python", "-m", "experiments.train", "--config.model.latent_dm=2"])
  assert _check(["python", "-m", "experiments.evaluate", "--k=5"])
  assert _check(["python", "-m", "experiments.no_such_module"])
  assert _check(["pip", "install", "-e", ".[nope]"])
  assert not _check(["python", "-m", "experiments.train", "--config=experiments/configs/default.py:quick",
                     "--config.model.latent_dim=2", "--workdir=w", "--noshow_config"])


def test_pyproject_declares_the_build_system_and_setup_py_the_metadata():
  tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
  build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
  assert build["build-backend"] == "setuptools.build_meta"
  assert any(r.startswith("setuptools") for r in build["requires"])
  setup = (REPO / "setup.py").read_text()
  assert 'name="vae_jax"' in setup and '"trackers":' in setup


def test_python_blocks_were_found():
  assert len(PYTHON) >= 4 and len(BASH) >= 8, (len(PYTHON), len(BASH))
