"""What the Bot API accepts from a bot: HTML texts, lengths, keyboards, commands, inline results.

The fake Bot API checks every request with these rules, so a test fails with Telegram's own
400 description ("can't parse entities", "message is too long"...) wherever the real service
would refuse what the bot sent.
"""

from __future__ import annotations

import html
import re
from typing import Any, NoReturn

ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-spoiler",
    "span",
    "tg-emoji",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href"},
    "blockquote": {"expandable"},
    "code": {"class"},
    "span": {"class"},
    "tg-emoji": {"emoji-id"},
}
MAX_TEXT_UTF16 = 4096
_TAG = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:=(?:\"[^\"<]*\"|'[^'<]*'))?)*)\s*>"
)
_ATTRIBUTE = re.compile(r"([a-zA-Z-]+)(?:=(?:\"([^\"]*)\"|'([^']*)'))?")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")


class Rejected(ValueError):
    """A request Telegram refuses with 400; the message is its description."""


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def parse_html(text: str) -> str:
    """The visible text of an HTML message; raises TelegramHtmlError as Telegram would."""
    out: list[str] = []
    stack: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "<":
            position = _read_tag(text, position, stack)
        elif char == "&":
            entity = _ENTITY.match(text, position)
            if entity is None:
                _fail(f"Character '&' is reserved and must be escaped at byte offset {position}")
            out.append(html.unescape(entity.group()))
            position = entity.end()
        else:
            out.append(char)
            position += 1
    if stack:
        _fail(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def _read_tag(text: str, position: int, stack: list[str]) -> int:
    tag = _TAG.match(text, position)
    if tag is None:
        _fail(f"Unexpected end of name token at byte offset {position}")
    closing, name, attributes = tag.group(1) == "/", tag.group(2).lower(), tag.group(3)
    if name not in ALLOWED_TAGS:
        _fail(f'Unsupported start tag "{name}" at byte offset {position}')
    if closing:
        if not stack or stack[-1] != name:
            expected = f'"</{stack[-1]}>"' if stack else "no end tag"
            _fail(
                f'Unmatched end tag at byte offset {position}, expected {expected}, found "</{name}>"'
            )
        stack.pop()
    else:
        _check_attributes(name, attributes, position)
        if name in ("blockquote", "pre") and name in stack:
            _fail(f'Nested "{name}" is not allowed at byte offset {position}')
        stack.append(name)
    return tag.end()


def _check_attributes(name: str, attributes: str, position: int) -> None:
    found = {
        m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _ATTRIBUTE.finditer(attributes)
    }
    unknown = set(found) - ALLOWED_ATTRIBUTES.get(name, set())
    if unknown:
        _fail(
            f'Unsupported attribute "{sorted(unknown)[0]}" of tag "{name}" at byte offset {position}'
        )
    if name == "a" and not html.unescape(found.get("href", "")).strip():
        _fail(f'Empty href of tag "a" at byte offset {position}')


def _fail(description: str) -> NoReturn:
    raise Rejected(f"Bad Request: can't parse entities: {description}")


def check_text(text: str, parse_mode: str | None) -> str:
    """The text as Telegram stores it (tags parsed away)."""
    visible = parse_html(text) if (parse_mode or "").upper() == "HTML" else text
    if not visible.strip():
        raise Rejected("Bad Request: message text is empty")
    if utf16_length(visible) > MAX_TEXT_UTF16:
        raise Rejected("Bad Request: message is too long")
    return visible


def check_markup(markup: Any) -> dict[str, Any] | None:
    """An inline keyboard as Telegram accepts it: labelled buttons, payloads of 1-64 bytes."""
    if not markup:
        return None
    for row in markup.get("inline_keyboard", []):
        for button in row:
            if not str(button.get("text", "")).strip():
                raise Rejected("Bad Request: BUTTON_TEXT_EMPTY")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise Rejected("Bad Request: BUTTON_DATA_INVALID")
    return markup


def check_commands(commands: list[dict[str, Any]]) -> None:
    for command in commands:
        if not re.fullmatch(r"[a-z0-9_]{1,32}", command.get("command", "")):
            raise Rejected("Bad Request: BOT_COMMAND_INVALID")
        if not 1 <= len(command.get("description", "")) <= 256:
            raise Rejected("Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")


def check_inline_results(results: list[dict[str, Any]]) -> None:
    """At most 50 results with unique ids of 1-64 bytes, each a valid message to send."""
    if len(results) > 50:
        raise Rejected("Bad Request: RESULTS_TOO_MUCH")
    ids = [str(r.get("id", "")) for r in results]
    if len(set(ids)) != len(ids) or not all(1 <= len(i.encode()) <= 64 for i in ids):
        raise Rejected("Bad Request: RESULT_ID_INVALID")
    for result in results:
        if not result.get("title"):
            raise Rejected("Bad Request: RESULT_TITLE_EMPTY")
        content = result.get("input_message_content") or {}
        check_text(str(content.get("message_text", "")), content.get("parse_mode"))


def entities_of(text: str) -> list[dict[str, Any]]:
    """The entities Telegram attaches to a user's text: a leading /command and @mentions."""
    found = []
    for kind, pattern in (
        ("bot_command", r"^/[A-Za-z0-9_@]+"),
        ("mention", r"@[A-Za-z0-9_]{5,32}"),
    ):
        for match in re.finditer(pattern, text):
            offset = utf16_length(text[: match.start()])  # offsets count UTF-16 units
            found.append({"type": kind, "offset": offset, "length": utf16_length(match.group())})
    return found
