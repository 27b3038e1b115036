"""The README's Python API example runs as written (on a temporary SQLite file)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"


def python_api_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "the README's Python API section has a python block"
    return match.group(1)


async def test_the_python_api_example_runs(tmp_path: Path) -> None:
    code = python_api_example()
    assert "sqlite:///tmp/h.sqlite3" in code
    code = code.replace("sqlite:///tmp/h.sqlite3", f"sqlite://{tmp_path / 'h.sqlite3'}")
    namespace: dict[str, Any] = {}
    exec(
        "async def example():\n" + textwrap.indent(code, "    ") + "\n    return conv, turn, ctx\n",
        namespace,
    )
    conv, turn, ctx = await namespace["example"]()
    assert [m.seq for m in turn] == [2, 3, 4]
    assert [m.seq for m in ctx.messages] == [1, 2, 3, 4]
    assert ctx.conversation_id == conv.id
