"""The README's code keeps working: every ```python block of README.md runs.

The blocks are executed in the order they appear, in one shared namespace, as a reader pasting
them one after the other into a Python session would run them: a later block may use the names
an earlier one defined (``torch``, ``TCLLoss``, ``criterion``, ``z0``, ...). A block that raises
fails the test and names the block. The snippets use tiny inputs (a batch of 8 random 32 x 32
images, 2 steps) and download nothing.

The README's shape is checked too: at most 300 lines and 3,000 words, and the two quick-start
commands exactly as CI runs the second one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"

#: a fenced code block: opening fence with its language, the body, the closing fence
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)

QUICK_START = (
    "python -m pip install -e . && tcl-ssl pretrain",
    'python -m pip install -e ".[test]" && python -m pytest',
)


def code_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced block of ``language`` in Markdown ``text``."""
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(2))
        for match in _FENCE.finditer(text)
        if match.group(1) == language
    ]


def run_blocks(blocks: list[tuple[int, str]], source: str = "README.md") -> dict:
    """Execute ``blocks`` in order in one namespace; return the namespace."""
    namespace: dict = {"__name__": "readme"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{source}:{line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"the python block at {source} line {line} raised {error!r}") from error
    return namespace


def test_code_blocks_are_found():
    text = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
    assert code_blocks(text, "python") == [(2, "x = 1\n"), (9, "y = x + 1\n")]


def test_a_broken_block_fails():
    with pytest.raises(AssertionError, match="line 7 raised"):
        run_blocks([(1, "x = 1\n"), (7, "x.no_such_attribute\n")])


def test_readme_python_blocks_run():
    blocks = code_blocks(README.read_text(encoding="utf-8"), "python")
    assert blocks, "README.md has no python blocks"
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    try:
        namespace = run_blocks(blocks)
    finally:
        torch.set_num_threads(threads)
    loss = namespace.get("loss")
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and bool(torch.isfinite(loss))


def test_readme_is_short_and_keeps_the_quick_start():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert len(text.split()) <= 3000
    bash = "\n".join(code for _, code in code_blocks(text, "bash"))
    for command in QUICK_START:
        assert command in bash.splitlines(), command
