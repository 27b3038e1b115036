"""Sampling a running server process with py-spy (``--profile``), and reading the samples.

``record(pid, seconds, path)`` runs ``py-spy record --format raw`` (collapsed stacks, one
``frame;frame;… count`` line per distinct stack) without pausing the target
(``--nonblocking``). ``summarise(path)`` turns the samples into a few lines: where the
process's time went by category (store, the tool's result conversion, the SDK's request
handling, HTTP, idle), then the heaviest functions. The categories are decided per sample,
first match wins, in the order listed in ``CATEGORIES``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["CATEGORIES", "executable", "record", "summarise"]


def executable() -> str | None:
    """py-spy next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, path: Path, *, rate: int = 250) -> Path | None:
    """Sample ``pid`` for ``seconds``; the raw samples in ``path`` (None: py-spy failed)."""
    spy = executable()
    if spy is None:
        return None
    process = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--nonblocking",
        "--idle",
        "--format",
        "raw",
        "--output",
        str(path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await process.wait()
    return path if process.returncode == 0 else None


#: (category, frame patterns): a sample belongs to the first category any of whose
#: patterns occurs in one of its frames ("function (file)", line numbers removed).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle (waiting for work)", ("select (selectors.py)", "wait (threading.py)")),
    ("store: ConversationStore + asyncpg", ("ConversationStore.", "(store/", "(asyncpg/")),
    (
        "tool result conversion (model dump, JSON text content)",
        ("convert_result (", "_convert_to_content (", "tool_result ("),
    ),
    ("JWT verification", ("verify_token (",)),
    (
        "socket reads and writes (syscalls)",
        ("_SelectorSocketTransport.write (", "_read_ready (", "sock_recv", "sock_send"),
    ),
    (
        "response serialisation (JSON-RPC envelope dump, json.dumps)",
        ("_write (mcp/server/_streamable_http_modern.py)",),
    ),
    (
        "SDK request handling (parse, classify, validate, dispatch, shape result)",
        ("(mcp/", "(mcp_types/"),
    ),
    ("HTTP server (uvicorn, starlette, h11/httptools)", ("(uvicorn/", "(starlette/", "(h11/")),
    ("asyncio / anyio machinery", ("(asyncio/", "(anyio/")),
)
_LINE_NUMBER = re.compile(r":\d+\)")


def _frames(stack: str) -> list[str]:
    return [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]


def summarise(path: Path, *, top: int = 25) -> list[str]:
    """Where the sampled process spent its time: by category, then by function."""
    categories: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = _frames(stack)
        category = next(
            (
                name
                for name, patterns in CATEGORIES
                if any(pattern in frame for frame in frames for pattern in patterns)
            ),
            "other",
        )
        categories[category] += n
        if category == CATEGORIES[0][0]:
            continue  # the function lists are about busy time
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return ["no samples"]
    busy = total - categories[CATEGORIES[0][0]]
    lines = [f"{total:,} samples, {busy:,} busy (not waiting for work)", "", "by category:"]
    for name, _ in (*CATEGORIES, ("other", ())):
        n = categories[name]
        share = f"{100 * n / busy:5.1f}% of busy" if name[:4] != "idle" and busy else ""
        lines.append(f"  {100 * n / total:5.1f}% of samples {share}  {name}")
    busy = busy or 1
    lines += ["", f"heaviest functions, % of busy samples (inclusive, top {top}):"]
    lines += [f"  {100 * n / busy:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "heaviest functions, % of busy samples (own time, top 20):"]
    lines += [f"  {100 * n / busy:5.1f}%  {frame}" for frame, n in own.most_common(20)]
    return lines
