"""The repository's promises: README and CI run the same test command."""
import re

from conftest import REPO


def test_ci_runs_the_readme_test_command():
  readme = (REPO / "README.md").read_text()
  ci = (REPO / ".ci" / "run").read_text()
  blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
  test_block = next(b for b in blocks if "pytest" in b)
  command = test_block.split("&&", 1)[1].strip()
  assert command in ci.splitlines(), (command, ci)


def test_readme_main_command_uses_an_existing_config():
  readme = (REPO / "README.md").read_text()
  match = re.search(r"--config=(experiments/configs/\w+\.py)", readme)
  assert match and (REPO / match.group(1)).exists()
