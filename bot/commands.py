"""The command registry: every chat command once, with who may run it.

`/help`, Telegram's command menu and Discord's command tree are generated from it, and the
assistant checks the audience here before it runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Audience(StrEnum):
    EVERYONE = "everyone"
    CHAT_ADMINS = "chat admins"  # in a group or server channel; anyone in a private chat
    MODERATORS = "moderators"  # listed in IPBOT_MODERATORS


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    description: str
    audience: Audience = Audience.EVERYONE


COMMANDS: tuple[Command, ...] = (
    Command("ask", "/ask QUESTION", "ask a question about managing IP in research"),
    Command("areas", "/areas", "list the nine areas of the Code of Practice"),
    Command("area", "/area NAME", "browse one area's recommendations and examples"),
    Command(
        "subscribe",
        "/subscribe [AREA...] [weekly]",
        "get news of the Code of Practice, for all or some areas",
        Audience.CHAT_ADMINS,
    ),
    Command(
        "unsubscribe",
        "/unsubscribe [AREA...]",
        "stop news, for all or some areas",
        Audience.CHAT_ADMINS,
    ),
    Command("subscriptions", "/subscriptions", "what news this chat receives"),
    Command("updates", "/updates [AREA]", "the latest news of the Code of Practice"),
    Command("suggest", "/suggest", "suggest an example, a correction or a source"),
    Command("cancel", "/cancel", "stop a /suggest exchange"),
    Command("forget", "/forget", "delete everything I keep about you"),
    Command("about", "/about", "corpus version and when it was last indexed"),
    Command("help", "/help", "what I can do"),
    Command("announce", "/announce UPDATE", "send an update to subscribers", Audience.MODERATORS),
    Command("stats", "/stats [DAYS]", "questions, answers and votes", Audience.MODERATORS),
    Command("gaps", "/gaps [DAYS]", "what people asked that the corpus lacks", Audience.MODERATORS),
    Command(
        "reload",
        "/reload",
        "check and load the corpus files, without downtime",
        Audience.MODERATORS,
    ),
    Command(
        "versions",
        "/versions",
        "the kept corpus versions and their test figures",
        Audience.MODERATORS,
    ),
    Command(
        "promote",
        "/promote N",
        "serve version N although the check held it back",
        Audience.MODERATORS,
    ),
    Command("rollback", "/rollback", "return to the previous corpus version", Audience.MODERATORS),
    Command("queue", "/queue", "community suggestions to accept or reject", Audience.MODERATORS),
)
ALIASES = {"start": "help"}
BY_NAME = {c.name: c for c in COMMANDS}


def find(name: str) -> Command | None:
    """The command a user typed, by name or alias, case-insensitive."""
    name = name.lower()
    return BY_NAME.get(ALIASES.get(name, name))


def public_commands() -> tuple[Command, ...]:
    """Commands shown in menus and /help to everyone (moderator commands are not advertised)."""
    return tuple(c for c in COMMANDS if c.audience != Audience.MODERATORS)
