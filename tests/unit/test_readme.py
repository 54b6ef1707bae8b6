"""README's Python example runs as printed and shows adaptation working."""

import re
from pathlib import Path


def test_readme_api_example_runs(capsys):
    text = (Path(__file__).parents[2] / "README.md").read_text()
    code = re.search(r"## Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    losses = namespace["curve"].mean()[0]
    assert losses[-1] < 0.75 * losses[0]
    assert "query MSE after 0..5 inner steps" in capsys.readouterr().out
