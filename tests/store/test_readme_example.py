"""The README's Python API examples run in order as written (on a temporary SQLite file)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_api_examples() -> str:
    """Every python block of the README's Python API section, in order, as one program."""
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 5, "the README's Python API section shows every operation"
    return "\n".join(blocks)


async def test_the_python_api_examples_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = python_api_examples()
    assert "sqlite:///tmp/h.sqlite3" in code
    code = code.replace("sqlite:///tmp/h.sqlite3", f"sqlite://{tmp_path / 'h.sqlite3'}")
    namespace: dict[str, Any] = {}
    exec(
        "async def example():\n" + textwrap.indent(code, "    ") + "\n    return locals()\n",
        namespace,
    )
    done = await namespace["example"]()
    assert [m.seq for m in done["turn"]] == [2, 3, 4]
    assert [m.seq for m in done["ctx"].messages] == [1, 2, 3, 4]
    assert done["ctx"].conversation_id == done["conv"].id
    assert done["hits"].results and "**" in done["hits"].results[0].snippet
    assert (done["fork"].last_seq, done["fork"].forked_from.seq) == (1, 1)
    assert done["conv"].key == "trip-2026"
    assert type(done["session"]).__name__ == "ChatstoreSession"
    assert type(done["history"]).__name__ == "ChatstoreChatMessageHistory"
    assert capsys.readouterr().out == "not_found no conversation with that id\n"
    assert done["pruned"].dry_run and done["facts"].conversations >= 2
    assert done["again"].conversations_imported == 0
    assert done["again"].conversations_skipped == len(
        [r for r in done["records"] if r.get("type") == "conversation"]
    )
