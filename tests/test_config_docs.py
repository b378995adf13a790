"""Every config field has a one-line doc, shown by --show_config and docs/CONFIG.md."""
import subprocess
import sys

from conftest import REPO
from experiments import train as train_cli
from experiments.configs import default
from vae_jax import config as config_lib


def test_every_field_has_a_doc_and_every_doc_a_field():
  fields = {name for name, _, _ in config_lib.documented_fields(config_lib.default_config())}
  undocumented = sorted(f for f in fields if not config_lib.FIELD_DOCS.get(f, "").strip())
  assert not undocumented, f"add a line to vae_jax.config.FIELD_DOCS for {undocumented}"
  stale = sorted(set(config_lib.FIELD_DOCS) - fields)
  assert not stale, f"FIELD_DOCS documents fields that do not exist: {stale}"
  multiline = sorted(f for f, doc in config_lib.FIELD_DOCS.items() if "\n" in doc)
  assert not multiline, f"docs must be one line: {multiline}"


def test_docs_config_md_is_up_to_date():
  expected = train_cli.config_table(default.get_config(), markdown=True)
  assert (REPO / "docs" / "CONFIG.md").read_text() == expected, (
      f"docs/CONFIG.md is out of date; regenerate it with `{train_cli.CONFIG_DOC_COMMAND}`")


def test_readme_links_the_config_reference():
  assert "docs/CONFIG.md" in (REPO / "README.md").read_text()


def test_show_config_prints_fields_values_and_docs_and_help_exits_0():
  command = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/iwae.py:k=5",
             "--config.objective.beta=2.0", "--show_config"]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
  assert len(lines) == len(config_lib.FIELD_DOCS)
  assert lines["objective.num_samples"].split()[1] == "5"          # the config file's value
  assert lines["objective.beta"].split()[1] == "2.0"               # the override
  assert config_lib.FIELD_DOCS["objective.beta"] in lines["objective.beta"]
  for flag in ("--help", "--helpfull"):
    result = subprocess.run([sys.executable, "-m", "experiments.train", flag], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--show_config" in result.stdout, (flag, result.stderr[-500:])
