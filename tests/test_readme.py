"""The README's ten-line example runs and prints what the README says it prints."""

import contextlib
import io
import re

import pytest

from conftest import REPO_ROOT


def _blocks(text):
    """Fenced blocks in order, as (language, body) pairs."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.realdata
@pytest.mark.slow
def test_readme_example_prints_what_the_readme_shows(data_dir, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Ten lines", 1)[1].split("\n## ", 1)[0]
    blocks = _blocks(section)
    assert [lang for lang, _ in blocks] == ["python", ""], blocks
    code, expected = blocks[0][1], blocks[1][1].strip().splitlines()
    monkeypatch.setenv("MINIVAE_DATA", str(data_dir))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip().splitlines() == expected
