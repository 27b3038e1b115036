"""The frameworks are optional: without them installed, chatstore imports and serves, and an
adapter's import says which extra to install."""

from __future__ import annotations

import subprocess
import sys

# A finder that makes the frameworks look uninstalled in a fresh interpreter.
_HIDE = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"agents", "langchain_core", "openai"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Hide())
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _HIDE + code], capture_output=True, text=True, timeout=60
    )


def test_chatstore_imports_without_the_frameworks() -> None:
    done = _python(
        "import store, store.integrations, mcp_server.server, mcp_server.cli\n"
        "assert 'agents' not in sys.modules and 'langchain_core' not in sys.modules\n"
        "print('ok')"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_an_adapter_without_its_framework_names_the_extra() -> None:
    for module, extra in (("openai_agents", "agents"), ("langchain", "langchain")):
        done = _python(f"import store.integrations.{module}")
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError: store.integrations."), last
        assert f"pip install 'chatstore[{extra}]'" in last
