"""Replies written out rather than drawn: the demo's (mode ``demo``) and a scripted ``reply_text``.

Mode ``demo`` is what ``streamq demo`` and ``streamq serve --demo`` answer without an OpenAI key:
it says plainly that the built-in simulator is answering, echoes the question, and shows what a
client has to render (a reasoning summary, a markdown list, a code block); asked to use a tool,
it calls one (the request's first tool, else a made-up ``get_weather``). ``reply_text`` streams
a given text word by word, e.g. for a test of how a page renders a model's markdown. Both are
deterministic, as every reply is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

DEMO_TOOL: Final = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city (made up by the simulator).",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
_WANTS_TOOL: Final = re.compile(r"\b(tools?|weather|function call)\b", re.IGNORECASE)
_TOKEN: Final = re.compile(r"\s*\S+\s*$|\s*\S+")
_CODE: Final = """\
```python
from streamq import StreamQ

async with StreamQ.from_env() as sq:
    job = await sq.enqueue_chat("Hello")
    async for chunk in job:  # live, or replayed later
        print(chunk, end="")
```"""


def text_tokens(text: str) -> list[str]:
    """``text`` cut into word tokens (each with the blanks before it): ``"".join`` gives it back
    (but for blanks at its very start, which stay with the first word)."""
    return _TOKEN.findall(text)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message: its string content, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (part.get("text") for part in content if isinstance(part, dict))
        return "".join(part for part in parts if isinstance(part, str))
    return ""


def _user_texts(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    return [message_text(m).strip() for m in messages if m.get("role") == "user"]


def wants_tool(body: Mapping[str, Any]) -> bool:
    """Whether a demo reply to ``body`` (chat shape) is a tool call: the last message is the
    user's and asks for a tool (mentions a tool, the weather or a function call)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    return last.get("role") == "user" and bool(_WANTS_TOOL.search(message_text(last)))


def with_tool(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with :data:`DEMO_TOOL` as its tools when it declares none."""
    return dict(body) if body.get("tools") else {**body, "tools": [DEMO_TOOL]}


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line.strip() else ">" for line in text.splitlines())


def demo_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The markdown answer of mode ``demo`` to a conversation."""
    asked = _user_texts(messages)
    question = asked[-1] if asked else ""
    last = messages[-1] if messages else {}
    parts = [
        "**This answer comes from streamq's built-in simulator**, not a language model: no "
        "`OPENAI_API_KEY` is set, so every prompt gets this demo reply.",
    ]
    if last.get("role") == "tool":
        parts.append(f"The tool answered `{message_text(last)}`; a model would now use that.")
    elif question:
        parts.append(f"You asked:\n\n{_quoted(question)}")
    if len(asked) > 1:
        parts.append(
            f"This is turn {len(asked)} of our conversation: the job carried all of it to the "
            f"worker, starting with your first question, “{asked[0]}”."
        )
    parts += [
        "What streamq adds to a chat:\n\n"
        "- the answer streams from a **queued job**, written to a Redis stream as it comes;\n"
        "- **reload** the page mid-answer: it comes back and continues where it was;\n"
        "- open this page's **URL in another tab**: both follow the answer live;\n"
        "- **Stop** cancels the job on its worker.",
        f"The same from Python:\n\n{_CODE}",
        "Ask me to *use a tool* to see a tool call, or set `OPENAI_API_KEY` for real answers.",
    ]
    return "\n\n".join(parts)


def demo_reasoning(messages: Sequence[Mapping[str, Any]]) -> str:
    """The reasoning summary that comes before a demo answer."""
    asked = _user_texts(messages)
    question = asked[-1] if asked else "nothing"
    if len(question) > 60:
        question = question[:57] + "..."
    return (
        f"The user asked “{question}”. No OpenAI key is set, so the simulator answers with its "
        "demo reply: say so, echo the question, show a list and a code block."
    )


def simulated_demo_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text (content, without the reasoning) of mode ``demo``'s answer to ``messages``
    when it does not call a tool: what ``streamq demo`` prints."""
    return demo_text(messages)


def demo_pieces(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The ``(delta field, token)`` pieces of a demo answer: reasoning, then content."""
    thoughts = [("reasoning_content", t) for t in text_tokens(demo_reasoning(messages))]
    return thoughts + [("content", t) for t in text_tokens(demo_text(messages))]
