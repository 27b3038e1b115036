"""A scripted model for the Agents SDK (canned responses, one of them a function-tool call),
and ``python -m tests.integrations.scripted_agents TURN…``: run those turns with
``Runner.run`` on a ``ChatstoreSession`` over ``CHATSTORE_DATABASE_URL`` and print, as JSON,
the input the model was given on each call."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, Model, ModelResponse, Runner, Usage, function_tool, set_tracing_disabled
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from store import Settings, open_store
from store.integrations.openai_agents import ChatstoreSession

SESSION = "agents-session"
USER = "agents-user"


def say(text: str, n: int) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{n}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def call(name: str, arguments: str, n: int) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=f"fc_{n}", call_id=f"call_{n}", type="function_call", name=name, arguments=arguments
    )


#: What the model answers to each turn's user text: one output list per model call.
SCRIPT: dict[str, list[list[Any]]] = {
    "What is the weather in Lyon?": [
        [call("weather", '{"city": "Lyon"}', 1)],
        [say("It is sunny in Lyon.", 2)],
    ],
    "And in Paris?": [[say("Rain in Paris, take an umbrella.", 3)]],
    "Thanks!": [[say("You're welcome.", 4)]],
}


class ScriptedModel(Model):
    """Answers from ``SCRIPT`` by the latest user message; records every input it is given."""

    def __init__(self) -> None:
        self.inputs: list[list[Any]] = []
        self._calls: dict[str, int] = {}

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.inputs.append(json.loads(json.dumps(items, default=str)))
        turn = next(item["content"] for item in reversed(items) if item.get("role") == "user")
        n = self._calls.get(turn, 0)
        self._calls[turn] = n + 1
        return ModelResponse(output=SCRIPT[turn][n], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny, 24 °C in {city}"


async def run(turns: list[str]) -> list[list[Any]]:
    set_tracing_disabled(True)
    model = ScriptedModel()
    agent = Agent(name="forecaster", instructions="Be brief.", model=model, tools=[weather])
    async with open_store(Settings()) as store:
        session = ChatstoreSession(SESSION, user=USER, store=store)
        for turn in turns:
            await Runner.run(agent, turn, session=session)
    return model.inputs


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(sys.argv[1:]))))
