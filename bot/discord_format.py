"""Discord's format of every reply: escaped Markdown in embeds, within Discord's limits.

The one place that decides how ipbot looks on Discord; `bot/discord.py` only sends what
these functions build, and never lets a message ping anyone.
"""

from __future__ import annotations

import re

import discord

from bot.replies import (
    DISCLAIMER,
    HELPDESK_URL,
    HUMAN_HELP,
    AboutReply,
    AnnouncePreview,
    AnswerReply,
    AreaList,
    AreaPage,
    HelpReply,
    Notice,
    RefreshReply,
    Reply,
    SuggestionQueue,
    UpdatesReply,
    not_covered,
    problems_note,
)
from bot.sender import Bulletin, DeliveryReport, Outbound, PersonalMessage, UpdateItem
from retrieval.corpus import Passage
from retrieval.search import Answer, printable

# Discord's limits (characters), see https://discord.com/developers/docs/resources/message
CONTENT_MAX, TITLE_MAX, DESCRIPTION_MAX, FOOTER_MAX = 2000, 256, 4096, 2048
FIELDS_MAX, FIELD_NAME_MAX, FIELD_VALUE_MAX, EMBED_MAX = 25, 256, 1024, 6000
THREAD_NAME_MAX, CHOICES_MAX, CHOICE_MAX = 100, 25, 100
NO_MENTIONS = discord.AllowedMentions.none()
COLOUR = discord.Colour(0x003399)  # EU blue


# -- formatting: typed replies to embeds ------------------------------------------------


def escape(text: str) -> str:
    """Corpus or user text shown as it is: no markdown, no mentions."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def shorten(text: str, limit: int, ellipsis: str = "…") -> str:
    """Fit `text` into `limit` characters, cutting at a word boundary."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(ellipsis))]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-\\") + ellipsis  # never leave a dangling escape backslash


def link(label: str, url: str) -> str:
    safe_url = url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return f"[{shorten(escape(label), 300)}]({safe_url})"


def passage_text(text: str, highlight: str, room: int) -> str:
    """The passage with its best sentence in bold; trimmed around that sentence if long."""
    sentence = highlight.strip()
    before, found, after = text.partition(sentence) if sentence else (text, "", "")
    if not found:
        return shorten(escape(text), room)
    full = f"{escape(before)}**{escape(found)}**{escape(after)}"
    if len(full) <= room:
        return full
    lead = "… " if before.strip() else ""
    core = f"{lead}**{shorten(escape(found), room - len(lead) - 5)}**"
    rest = room - len(core) - 1
    tail = shorten(escape(after.strip()), rest) if rest > 20 and after.strip() else ""
    return f"{core} {tail}".rstrip()


def passage_value(passage: Passage, highlight: str, budget: int, tagged: bool) -> str:
    """Text and citation; the kind tag only when browsing, where it helps to scan a list."""
    tag = f"*{passage.kind}* · " if tagged else ""
    source = f"{tag}{link(passage.citation, passage.url)}"
    return passage_text(passage.text, highlight, budget - len(source) - 1) + "\n" + source


def add_passages(
    embed: discord.Embed, rows: list[tuple[str, Passage, str]], tagged: bool = False
) -> discord.Embed:
    """Add (name, passage, highlight) fields, sharing what is left of the 6,000 characters."""
    rows = rows[:FIELDS_MAX]
    names = [shorten(escape(name), FIELD_NAME_MAX) for name, _, _ in rows]
    left = EMBED_MAX - len(embed) - sum(map(len, names))
    budget = min(FIELD_VALUE_MAX, left // max(1, len(rows)))
    for name, (_, passage, highlight) in zip(names, rows, strict=True):
        value = shorten(passage_value(passage, highlight, budget, tagged), budget)  # last resort
        embed.add_field(name=name, value=value, inline=False)
    return embed


def new_embed(title: str, description: str = "", footer: str = "") -> discord.Embed:
    embed = discord.Embed(
        title=shorten(title, TITLE_MAX),
        description=shorten(description, DESCRIPTION_MAX) or None,
        colour=COLOUR,
    )
    if footer:
        embed.set_footer(text=shorten(footer, FOOTER_MAX))
    return embed


def answer_embed(answer: Answer, disclaimer: str) -> discord.Embed:
    notes = [f"*{escape(note)}*" for note in answer.notes]
    if not answer.answered:
        return not_covered_embed(answer, notes)
    question = f"**Q:** {shorten(escape(answer.question), 500)}"
    lead = (
        [f"**{shorten(escape(answer.lead), 1000)}**"] if answer.offset == 0 and answer.lead else []
    )
    title = answer.area.title if answer.area else "Answer"
    embed = new_embed(title, "\n".join([question, *notes, *lead]), disclaimer)
    numbered = enumerate(answer.hits, start=answer.offset + 1)
    rows = [
        (f"{n}. {hit.passage.title}{answer.elsewhere(hit)}", hit.passage, hit.highlight)
        for n, hit in numbered
    ]
    return add_passages(embed, rows)


def not_covered_embed(answer: Answer, notes: list[str]) -> discord.Embed:
    lines = [*notes, not_covered(answer)]
    if answer.suggestions:
        closest = ", ".join(f"**{escape(a.title)}** (`/area {a.slug}`)" for a in answer.suggestions)
        lines.append(f"Closest areas: {closest}")
    if answer.about_ip:
        lines.append(f"{HUMAN_HELP} {link('European IP Helpdesk', HELPDESK_URL)}")
    return new_embed("Not covered", "\n\n".join(lines))


def reply_embed(reply: Reply) -> discord.Embed | None:
    """The embed for a reply; None for a notice, which is sent as plain text."""
    match reply:
        case AnswerReply(answer=answer, disclaimer=disclaimer):
            return answer_embed(answer, disclaimer)
        case AreaList(areas=areas):
            embed = new_embed(f"The {len(areas)} areas of the Code of Practice")
            for s in areas[:FIELDS_MAX]:
                value = (
                    f"{escape(s.area.description)}\n`/area {s.area.slug}` · {s.passages} passages"
                )
                embed.add_field(name=shorten(escape(s.area.title), FIELD_NAME_MAX), value=value)
            return embed
        case AreaPage(area=area, passages=passages, page=page, pages=pages):
            embed = new_embed(area.title, escape(area.description), f"Page {page + 1} of {pages}")
            rows = [(f"{p.id}: {p.title}", p, "") for p in passages]
            return add_passages(embed, rows, tagged=True)
        case HelpReply(intro=intro, commands=commands_, example=example, disclaimer=disclaimer):
            embed = new_embed("ipbot", intro, disclaimer)
            usage = "\n".join(f"`{c.usage}` {c.description}" for c in commands_)
            embed.add_field(name="Commands", value=shorten(usage, FIELD_VALUE_MAX), inline=False)
            also = "Mention me with a question, or send me a direct message."
            embed.add_field(name="Without commands", value=also, inline=False)
            embed.add_field(name="Try", value=f"/ask {escape(example)}", inline=False)
            return embed
        case AboutReply() as about:
            embed = new_embed("About ipbot")
            embed.add_field(name="Corpus", value=f"{about.corpus_version} ({about.corpus_hash})")
            embed.add_field(name="Passages", value=str(about.passages))
            embed.add_field(name="Indexed", value=about.indexed_at or "not yet")
            embed.add_field(name="Model", value=escape(about.model))
            if about.problems:
                embed.add_field(
                    name="Corpus problems",
                    value=shorten(escape(problems_note(about.problems)), FIELD_VALUE_MAX),
                    inline=False,
                )
            return embed
        case UpdatesReply(items=items, area=area):
            scope = f" about {area.title}" if area else ""
            embed = new_embed(f"Latest news{scope}", "" if items else f"No updates yet{scope}.")
            return add_updates(embed, items)
        case AnnouncePreview(item=item, subscribers=subscribers, already_published=already):
            state = (
                "Already published: confirming sends nothing again."
                if already
                else f"It will go to {subscribers} subscribed chats."
            )
            return add_updates(new_embed("Preview of an announcement", state), (item,))
        case RefreshReply(text=text, ok=ok):
            title = "Corpus refresh" if ok else "Corpus refresh: the live version is unchanged"
            return new_embed(title, shorten(escape(text), DESCRIPTION_MAX))
        case SuggestionQueue(items=items):
            embed = new_embed("Suggestions waiting")
            for waiting in items[:FIELDS_MAX]:
                target = f" to {waiting.passage_id}" if waiting.passage_id else ""
                link_ = f"\n{link(shorten(waiting.url, 200), waiting.url)}" if waiting.url else ""
                value = shorten(f"{escape(waiting.text)}{link_}", FIELD_VALUE_MAX)
                embed.add_field(
                    name=f"#{waiting.id} {waiting.kind}{target}", value=value, inline=False
                )
            return embed
        case Notice():
            return None
    raise TypeError(f"no Discord format for {type(reply).__name__}")


def update_value(item: UpdateItem, limit: int = FIELD_VALUE_MAX) -> str:
    """An update in `limit` characters: its text shortened (or left out) before its date and
    link, which always stay."""
    areas = ", ".join(a.title for a in item.areas) if len(item.areas) < 9 else "all areas"
    head, more = f"*{item.date:%d %B %Y} · {escape(areas)}*", link("Read more", item.url)
    room = min(limit, FIELD_VALUE_MAX) - len(head) - len(more) - 2
    body = shorten(escape(item.body), room) if room >= 40 else ""
    return "\n".join(part for part in (head, body, more) if part)


def add_updates(embed: discord.Embed, items: tuple[UpdateItem, ...]) -> discord.Embed:
    """The updates as fields of one embed (6,000 characters in all): a long digest shortens
    each update's text, so that every update keeps its title and link."""
    items = items[:FIELDS_MAX]
    names = [shorten(escape(item.title), FIELD_NAME_MAX) for item in items]
    room = EMBED_MAX - len(embed) - sum(map(len, names))
    share = room // max(len(items), 1)
    for name, item in zip(names, items, strict=True):
        embed.add_field(name=name, value=update_value(item, share), inline=False)
    return embed


def outbound_embed(message: Outbound) -> discord.Embed:
    """A broadcast, a moderator's delivery report or a personal message as an embed."""
    if isinstance(message, Bulletin):
        title = "Your weekly ipbot digest" if message.digest else "ipbot update"
        footer = "/unsubscribe to stop these messages, /subscriptions to see what you receive."
        return add_updates(new_embed(title, footer=footer), message.items)
    if isinstance(message, PersonalMessage):
        return personal_embed(message)
    return report_embed(message)


def personal_embed(message: PersonalMessage) -> discord.Embed:
    """A message to one person; cited passages (a question now covered) look as in answers."""
    lead = [f"**{shorten(escape(message.lead), 1000)}**"] if message.lead else []
    footer = DISCLAIMER if message.hits else ""
    embed = new_embed("ipbot", "\n\n".join([escape(message.text), *lead]), footer)
    numbered = enumerate(message.hits, start=1)
    return add_passages(
        embed, [(f"{n}. {h.passage.title}", h.passage, h.highlight) for n, h in numbered]
    )


def report_embed(report: DeliveryReport) -> discord.Embed:
    s = report.status
    state = "done" if s.done else "sending…"
    embed = new_embed(f"Delivery of “{report.title}” ({state})")
    for name in ("subscribers", "sent", "pending", "failed", "blocked", "uncertain"):
        embed.add_field(name=name.capitalize(), value=str(getattr(s, name)))
    embed.add_field(name="In weekly digests", value=str(s.scheduled))
    return embed


_MENTION_CODE = re.compile(r"<(?:@[!&]?|#)\d+>")


def thread_name(question: str) -> str:
    """The question as a thread's name, without mention codes (a name shows them raw)."""
    text = _MENTION_CODE.sub(" ", printable(question))
    return shorten(" ".join(text.split()), THREAD_NAME_MAX) or "Question"
