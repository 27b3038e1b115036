"""The framework adapters' tests use the store tests' fixtures."""

from tests.store.conftest import raw

__all__ = ["raw"]
