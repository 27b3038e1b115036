"""``store._pydantic.trusted`` writes pydantic's per-instance state itself: this fails, naming
that module, when a pydantic upgrade changes what a model instance carries."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel

from store._pydantic import INSTANCE_SLOTS, trusted
from store.schemas import Message, MessagePage

HOOK = "store/_pydantic.py builds models by setting pydantic's instance state directly"


def _values() -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "conversation_id": uuid.uuid4(),
        "seq": 3,
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "name": "search", "arguments": {"q": "Lyon"}}],
        "tool_call_id": None,
        "metadata": {"k": [1, 2.5, None]},
        "created_at": datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC),
        "token_count": 17,
        "raw": {"type": "message", "content": [{"type": "input_text", "text": "hi"}]},
    }


def test_pydantic_instances_carry_the_state_the_hook_sets() -> None:
    slots = set(BaseModel.__slots__) - {"__dict__"}
    assert slots == set(INSTANCE_SLOTS), (
        f"{HOOK}; pydantic's BaseModel now has the instance slots {sorted(slots)} instead of "
        f"{sorted(INSTANCE_SLOTS)}: update trusted() to set what model_construct sets"
    )


def test_a_trusted_model_is_the_model_construct_would_build() -> None:
    values = _values()
    made = trusted(Message, dict(values))
    reference = Message.model_construct(**values)  # type: ignore[arg-type]
    validated = Message.model_validate(values)
    for attribute in ("__dict__", *INSTANCE_SLOTS):
        assert getattr(made, attribute) == getattr(reference, attribute), (HOOK, attribute)
    assert made == reference == validated, HOOK
    assert made.model_fields_set == reference.model_fields_set, HOOK
    assert made.model_dump(mode="json") == validated.model_dump(mode="json"), HOOK
    assert made.model_dump_json() == validated.model_dump_json(), HOOK
    assert made.model_copy(update={"seq": 4}).seq == 4, HOOK
    assert pickle.loads(pickle.dumps(made)) == validated, HOOK
    page = trusted(MessagePage, {"messages": [made], "has_more": False})
    assert page.model_dump(mode="json") == MessagePage(
        messages=[validated], has_more=False
    ).model_dump(mode="json"), HOOK
