"""LLM conversation: streaming chat client, sentence splitting, the tool-calling agent."""

from ivr.llm.agent import (
    Agent,
    AgentEvent,
    AgentStep,
    Done,
    ModelListens,
    ModelSays,
    ToolRan,
    UsageEvent,
)
from ivr.llm.client import ChatClient, ChatDelta, Finish, TextDelta, ToolCallDone, Usage
from ivr.llm.sentences import SentenceSplitter

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentStep",
    "ChatClient",
    "ChatDelta",
    "Done",
    "Finish",
    "ModelListens",
    "ModelSays",
    "SentenceSplitter",
    "TextDelta",
    "ToolCallDone",
    "ToolRan",
    "Usage",
    "UsageEvent",
]
