"""LLM conversation: streaming chat client (text and audio), sentence splitting, the
tool-calling agent."""

from ivr.llm.agent import (
    Agent,
    AgentEvent,
    AgentStep,
    Done,
    ModelAudio,
    ModelListens,
    ModelSaid,
    ModelSays,
    ToolRan,
    UsageEvent,
)
from ivr.llm.client import (
    AudioDelta,
    AudioDone,
    AudioOut,
    AudioTranscriptDelta,
    ChatClient,
    ChatDelta,
    Finish,
    TextDelta,
    ToolCallDone,
    Usage,
)
from ivr.llm.sentences import SentenceSplitter

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentStep",
    "AudioDelta",
    "AudioDone",
    "AudioOut",
    "AudioTranscriptDelta",
    "ChatClient",
    "ChatDelta",
    "Done",
    "Finish",
    "ModelAudio",
    "ModelListens",
    "ModelSaid",
    "ModelSays",
    "SentenceSplitter",
    "TextDelta",
    "ToolCallDone",
    "ToolRan",
    "Usage",
    "UsageEvent",
]
