"""Nothing internal in any error: the texts every other fault and attack test collected.

Each suite records every error text a client received (tool errors, JSON-RPC error messages,
HTTP 401 bodies and challenges, store exceptions) through ``tests.leaks.clean``, which
already fails at the spot on SQL, driver names, tracebacks, paths or another user's data. This
test runs last (see ``conftest.py``), re-checks the whole corpus and reports what it covered.
"""

from __future__ import annotations

import pytest

from tests.leaks import CORPUS, internal_markers


def test_no_error_text_carries_anything_internal() -> None:
    if not CORPUS.texts:
        pytest.skip("no other fault or attack test ran in this session")
    leaking = CORPUS.leaking()
    assert not leaking, leaking
    distinct = sorted(set(CORPUS.texts))
    print(f"error corpus: {len(CORPUS.texts)} texts ({len(distinct)} distinct), {CORPUS.codes()}")


def test_the_leak_detector_detects() -> None:
    """The checker itself must be able to fail."""
    assert internal_markers('File "/work/main/store/store.py", line 3')
    assert internal_markers("asyncpg.exceptions.DataError: invalid input")
    assert internal_markers("UPDATE conversations SET last_seq = last_seq + 1")
    assert internal_markers('duplicate key value violates unique constraint "x"')
    assert internal_markers("not_found: alice's trip", ["alice"])
    assert not internal_markers("not_found: no conversation with that id")
