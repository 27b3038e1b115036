"""The one hook into pydantic's internals: an output model built without validating it again.

The store builds its output models (``Conversation``, ``Message`` and the pages) from values the
database just returned or the input it just validated. ``model_validate`` would check them a
second time and ``model_construct`` (the public way to skip that) still walks every field's
default handling: measured with the bench on this machine, ``model_construct`` instead of
``trusted`` took W2 (latest 50 messages) from 1.56-1.62x to 1.94-2.29x the raw-asyncpg floor
and W5 (a page of conversations) from 1.51-1.60x to 1.88-1.96x. ``trusted`` sets the instance
state ``model_construct`` would set, and nothing else: ``__dict__`` (every field given),
``__pydantic_fields_set__``, ``__pydantic_extra__`` and ``__pydantic_private__``.

``tests/store/test_pydantic_hook.py`` fails, naming this module, when a pydantic upgrade
changes what ``model_construct`` leaves on an instance.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["INSTANCE_SLOTS", "trusted"]

M = TypeVar("M", bound=BaseModel)

#: The per-instance attributes (besides ``__dict__``) a pydantic model carries: what
#: ``trusted`` fills in. The hook's test compares this with ``BaseModel.__slots__``.
INSTANCE_SLOTS = ("__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")

_FIELDS_SET: dict[type[BaseModel], set[str]] = {}
_object_new = object.__new__
_object_setattr = object.__setattr__


def trusted(model: type[M], values: dict[str, Any]) -> M:
    """``model`` holding ``values`` (every field, already valid), without validation."""
    fields_set = _FIELDS_SET.get(model)
    if fields_set is None:
        fields_set = _FIELDS_SET[model] = set(model.model_fields)
    instance = _object_new(model)
    _object_setattr(instance, "__dict__", values)
    _object_setattr(instance, "__pydantic_fields_set__", fields_set)
    _object_setattr(instance, "__pydantic_extra__", None)
    _object_setattr(instance, "__pydantic_private__", None)
    return instance
