"""The README's example runs as written."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    script = tmp_path / "readme_example.py"
    script.write_text(blocks[0] + blocks[1])  # the second block continues the first (the open core, part 2)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "NeuronStats(site='act', layers=2, d_mlp=64" in res.stdout
    assert re.search(r"\{'angry': \d+, 'happy': \d+, 'neutral': \d+, 'sad': \d+\} torch.Size\(\[1, \d+\]\) "
                     r"torch.Size\(\[1, 32\]\) torch.Size\(\[1, 32\]\)", res.stdout), res.stdout[-1500:]


def test_readme_setup_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    setup = re.search(r"## Set up\n\n```bash\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert setup == ['pip install -e ".[dev]"', "pytest"]
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    # CI runs exactly the README's commands, after only strict mode and moving to the repository root
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', *setup], commands
