"""Telegram's format of every reply: HTML (everything escaped), buttons, the 4,096 limit.

The one place that decides how ipbot looks on Telegram; `bot/telegram.py` only sends what
`render` returns. Buttons carry short strings that name a stored question, never the
question itself, so they work after a restart.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultArticle,
    InputTextMessageContent,
)
from telegram.constants import MessageLimit

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
    Quiet,
    RefreshReply,
    Reply,
    SuggestionQueue,
    UpdatesReply,
    not_covered,
    problems_note,
)
from bot.sender import Bulletin, DeliveryReport, Outbound, PersonalMessage, UpdateItem
from retrieval.corpus import Passage
from retrieval.search import Answer, Hit

LIMIT = MessageLimit.MAX_TEXT_LENGTH  # 4,096 UTF-16 units of text, counted after parsing tags
LATER = "<i>More are waiting: decide these, then send /queue again.</i>"
PLAIN_CHUNK = LIMIT // 2  # plain text cut here fits even if every character is an emoji
MAX_PASSAGE_CHARS = 3000  # far above any corpus passage: keeps one passage within one message
HOW_TO_ASK = (
    "In a private chat, just type your question. In a group, mention me or reply to one of "
    "my messages. In any chat, type my @username and a question to share passages."
)
# within the 200 characters of a button's alert, with a username of Telegram's maximum 32
COVERAGE_IN_GROUP = (
    "Thank you. I will send you a private message when I can answer this, if you open a "
    "private chat with me{link} and press Start. /forget removes the request."
)


# Button data: self-describing strings within Telegram's 64 bytes, so a button keeps working
# after a restart and on any replica (the question itself is looked up by its id).
def more_data(question_id: int, offset: int) -> str:
    return f"more:{question_id}:{offset}"


def sources_data(question_id: int, offset: int) -> str:
    return f"src:{question_id}:{offset}"


def area_data(slug: str, page: int = 0, in_place: bool = False) -> str:
    return f"area:{slug}:{page}:{int(in_place)}"


def vote_data(question_id: int, helpful: bool) -> str:
    return f"fb:{question_id}:{'+' if helpful else '-'}"


def announce_data(token: str, confirm: bool) -> str:
    return f"ann:{token}:{'y' if confirm else 'n'}"


def cover_data(question_id: int) -> str:
    return f"cov:{question_id}"


def decide_data(suggestion_id: int, accept: bool) -> str:
    return f"sg:{suggestion_id}:{'a' if accept else 'r'}"


MORE = r"^more:(\d{1,18}):(\d{1,4})$"
SOURCES = r"^src:(\d{1,18}):(\d{1,4})$"
AREA = r"^area:([a-z-]{1,40}):(\d{1,3}):([01])$"
VOTE = r"^fb:(\d{1,18}):([+-])$"
ANNOUNCE = r"^ann:([0-9a-f]{12}):([yn])$"
COVER = r"^cov:(\d{1,18})$"
DECIDE = r"^sg:(\d{1,18}):([ar])$"
COVER_LABEL = "🔔 Tell me when this is covered"


@dataclass(frozen=True)
class Outgoing:
    """One reply as Telegram messages: HTML texts in order, buttons under the last one."""

    texts: tuple[str, ...]
    keyboard: InlineKeyboardMarkup | None = None


# Formatting: everything from the corpus or the user goes through `escape`.
def escape(text: str) -> str:
    return html.escape(text)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def visible_length(fragment: str) -> int:
    """What Telegram counts against the limit: UTF-16 units of the text without its tags."""
    text = html.unescape(re.sub(r"<[^>]*>", "", fragment))
    return len(text.encode("utf-16-le")) // 2


def pack(blocks: Iterable[str], limit: int = LIMIT) -> tuple[str, ...]:
    """Join blocks into as few messages as fit the limit, splitting only between blocks."""
    messages: list[str] = []
    current = ""
    for block in blocks:
        joined = f"{current}\n\n{block}" if current else block
        if current and visible_length(joined) > limit:
            messages.append(current)
            joined = block
        current = joined
    return (*messages, current) if current else tuple(messages)


def plain(text: str) -> tuple[str, ...]:
    """Plain text (it may quote the user at any length) escaped, in pieces that fit."""
    return tuple(escape(text[i : i + PLAIN_CHUNK]) for i in range(0, len(text), PLAIN_CHUNK))


def emphasise(text: str, sentence: str) -> str:
    """The passage as HTML with its best-matching sentence in bold."""
    before, found, after = text.partition(sentence) if sentence else (text, "", "")
    if not found:
        return escape(text)
    return f"{escape(before)}<b>{escape(found)}</b>{escape(after)}"


def citation_link(passage: Passage) -> str:
    return f'📖 <a href="{escape(passage.url)}">{escape(clip(passage.citation, 300))}</a>'


def heading(passage: Passage, number: int | None = None, tag: str = "", elsewhere: str = "") -> str:
    """A passage's title in bold; `tag` (kind, ID) only where the user asked for sources;
    `elsewhere`, the area of a passage from another area than the answer's."""
    prefix = f"{number}. " if number is not None else ""
    suffix = f" <i>({escape(tag)})</i>" if tag else ""
    return f"<b>{prefix}{escape(clip(passage.title, 200))}</b>{escape(elsewhere)}{suffix}"


def format_hit(number: int, hit: Hit, elsewhere: str = "") -> str:
    text = emphasise(clip(hit.passage.text, MAX_PASSAGE_CHARS), hit.highlight)
    title = heading(hit.passage, number, elsewhere=elsewhere)
    return f"{title}\n{text}\n{citation_link(hit.passage)}"


def format_source(passage: Passage) -> str:
    text = escape(clip(passage.text, MAX_PASSAGE_CHARS))
    tag = f"{passage.kind}, {passage.id}"
    return (
        f"{heading(passage, tag=tag)}\n{citation_link(passage)}\n"
        f"<blockquote expandable>{text}</blockquote>"
    )


def not_covered_html(answer: Answer) -> str:
    lines = [f"<b>{escape(not_covered(answer))}</b>"]
    if answer.suggestions:
        areas = (
            f"{escape(a.title)} (<code>/area {escape(a.slug)}</code>)" for a in answer.suggestions
        )
        lines.append(f"The closest areas: {', '.join(areas)}.")
    if answer.about_ip:
        lines.append(
            f'{escape(HUMAN_HELP)} <a href="{escape(HELPDESK_URL)}">European IP Helpdesk</a>'
        )
    return "\n".join(lines)


def answer_blocks(answer: Answer, disclaimer: str) -> list[str]:
    blocks = [f"<i>{escape(note)}</i>" for note in answer.notes]
    if not answer.answered:
        return [*blocks, not_covered_html(answer)]
    if answer.offset == 0 and answer.lead:
        blocks.append(f"<b>{escape(answer.lead)}</b>")
    if answer.area:
        blocks.append(f"<b>Area:</b> {escape(answer.area.title)}")
    numbered = enumerate(answer.hits, start=answer.offset + 1)
    blocks += [format_hit(n, hit, answer.elsewhere(hit)) for n, hit in numbered]
    return [*blocks, f"<i>{escape(disclaimer)}</i>"]


def button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text, callback_data=data)


def answer_keyboard(answer: Answer, question_id: int | None) -> InlineKeyboardMarkup | None:
    if not answer.answered:
        browse = [[button(f"Browse: {a.title}", area_data(a.slug))] for a in answer.suggestions]
        if question_id is not None and answer.offset == 0:
            browse.append([button(COVER_LABEL, cover_data(question_id))])
        return InlineKeyboardMarkup(browse) if browse else None
    rows: list[list[InlineKeyboardButton]] = []
    if question_id is not None:
        first = [button("Sources", sources_data(question_id, answer.offset))]
        if answer.has_more:
            first.insert(
                0, button("More ▸", more_data(question_id, answer.offset + len(answer.hits)))
            )
        rows.append(first)
    if answer.area:
        rows.append([button(f"Browse: {answer.area.title}", area_data(answer.area.slug))])
    if question_id is not None:
        rows.append(
            [
                button("👍 Helpful", vote_data(question_id, True)),
                button("👎 Not helpful", vote_data(question_id, False)),
            ]
        )
    return InlineKeyboardMarkup(rows)


def render_areas(reply: AreaList) -> Outgoing:
    blocks = ["<b>The nine areas of the Code of Practice</b>"]
    for summary in reply.areas:
        area = summary.area
        blocks.append(
            f"<b>{escape(area.title)}</b> ({summary.passages} passages)\n"
            f"{escape(area.description)}\n<code>/area {escape(area.slug)}</code>"
        )
    rows = [[button(s.area.title, area_data(s.area.slug))] for s in reply.areas]
    return Outgoing(pack(blocks), InlineKeyboardMarkup(rows))


def render_page(page: AreaPage) -> Outgoing:
    area = page.area
    blocks = [
        f"<b>{escape(area.title)}</b>\n<i>{escape(area.description)}</i>\n"
        f"Page {page.page + 1} of {page.pages}"
    ]
    for passage in page.passages:  # short excerpts: a page is one message, edited in place
        first = passage.sentences[0] if passage.sentences else passage.text
        blocks.append(
            f"{heading(passage, tag=passage.kind)}\n{escape(clip(first, 300))}\n"
            f"{citation_link(passage)}"
        )
    nav = []
    if page.page > 0:
        nav.append(button("◂ Previous", area_data(area.slug, page.page - 1, in_place=True)))
    if page.page + 1 < page.pages:
        nav.append(button("Next ▸", area_data(area.slug, page.page + 1, in_place=True)))
    return Outgoing(pack(blocks), InlineKeyboardMarkup([nav]) if nav else None)


def render_help(reply: HelpReply) -> Outgoing:
    commands = "\n".join(f"{escape(c.usage)} – {escape(c.description)}" for c in reply.commands)
    text = (
        f"{escape(reply.intro)}\n\n<b>Commands</b>\n{commands}\n\n{escape(HOW_TO_ASK)}\n\n"
        f"Try: <i>{escape(reply.example)}</i>\n\n<i>{escape(reply.disclaimer)}</i>"
    )
    return Outgoing(pack([text]))


def render_about(about: AboutReply) -> Outgoing:
    text = (
        f"<b>Corpus</b> {escape(about.corpus_version)} ({about.passages} passages, "
        f"hash <code>{escape(about.corpus_hash)}</code>)\n"
        f"<b>Indexed</b> {escape(about.indexed_at or 'not yet')}\n<b>Model</b> {escape(about.model)}"
    )
    if about.problems:
        text += "\n\n" + escape(problems_note(about.problems))
    return Outgoing(pack([text]))


def render_refresh(reply: RefreshReply) -> Outgoing:
    """A refresh summary, with a Publish button for each new update."""
    rows = [
        [button(f"📣 Publish: {clip(title, 40)}", announce_data(token, True))]
        for title, token in reply.offers
    ]
    return Outgoing(plain(reply.text), InlineKeyboardMarkup(rows) if rows else None)


def render(reply: Reply) -> Outgoing:
    """The one Telegram format of every reply the assistant gives."""
    match reply:
        case AnswerReply(answer=answer, question_id=question_id, disclaimer=disclaimer):
            keyboard = answer_keyboard(answer, question_id)
            return Outgoing(pack(answer_blocks(answer, disclaimer)), keyboard)
        case UpdatesReply():
            return render_updates(reply)
        case AnnouncePreview():
            return render_preview(reply)
        case SuggestionQueue():
            return render_queue(reply)
        case AreaList():
            return render_areas(reply)
        case AreaPage():
            return render_page(reply)
        case HelpReply():
            return render_help(reply)
        case AboutReply():
            return render_about(reply)
        case RefreshReply():
            return render_refresh(reply)
        case Notice(text=text):
            return Outgoing(plain(text))
        case Quiet():
            return Outgoing(())  # nothing to send
    raise TypeError(f"no Telegram format for {type(reply).__name__}")


def render_updates(reply: UpdatesReply) -> Outgoing:
    if not reply.items:
        about = f" about {reply.area.title}" if reply.area else ""
        return Outgoing((escape(f"No updates yet{about}."),))
    head = "<b>Latest news of the Code of Practice</b>"
    blocks = [head, *(render_update(item) for item in reply.items)]
    return Outgoing(pack(blocks))


def render_preview(preview: AnnouncePreview) -> Outgoing:
    """What a moderator is about to send, with Confirm / Cancel."""
    if preview.already_published:
        note = "<i>This update was already published: confirming sends nothing again.</i>"
    else:
        note = f"<i>It will go to {preview.subscribers} subscribed chats.</i>"
    text = f"<b>Preview</b>\n\n{render_bulletin(Bulletin((preview.item,)))}\n\n{note}"
    keyboard = InlineKeyboardMarkup(
        [
            [
                button("✅ Confirm", announce_data(preview.token, True)),
                button("✖ Cancel", announce_data(preview.token, False)),
            ]
        ]
    )
    return Outgoing((text,), keyboard)


def render_queue(queue: SuggestionQueue) -> Outgoing:
    """Open suggestions, oldest first, each with Accept and Reject."""
    blocks = ["<b>Suggestions waiting</b>"]
    rows = []
    for s in queue.items:
        about = f" to {escape(s.passage_id)}" if s.passage_id else ""
        link = f'\n🔗 <a href="{escape(s.url)}">{escape(clip(s.url, 200))}</a>' if s.url else ""
        block = (
            f"<b>#{s.id}</b> {escape(s.kind)}{about} · {s.created_at:%d %b %Y}\n"
            f"{escape(clip(s.text, 600))}{link}"
        )
        if visible_length("\n\n".join([*blocks, block, LATER])) > LIMIT:
            blocks.append(LATER)  # no button for a suggestion the moderator cannot read
            break
        blocks.append(block)
        rows.append(
            [
                button(f"✅ Accept #{s.id}", decide_data(s.id, True)),
                button(f"✖ Reject #{s.id}", decide_data(s.id, False)),
            ]
        )
    return Outgoing(("\n\n".join(blocks),), InlineKeyboardMarkup(rows))


def inline_results(reply: AnswerReply | Notice) -> list[InlineQueryResultArticle]:
    """Passages to share from any chat, each a message with its citation and the disclaimer."""
    if isinstance(reply, Notice):
        content = InputTextMessageContent(escape(clip(reply.text, PLAIN_CHUNK)))
        return [InlineQueryResultArticle("notice", clip(reply.text, 100), content)]
    answer = reply.answer
    if not answer.answered:
        content = InputTextMessageContent(not_covered_html(answer))
        return [InlineQueryResultArticle("not-covered", clip(not_covered(answer), 100), content)]
    footer = f"\n\n<i>{escape(reply.disclaimer)}</i>"
    return [
        InlineQueryResultArticle(
            clip(hit.passage.id, 64),
            clip(hit.passage.title, 100),
            InputTextMessageContent(format_hit(number, hit) + footer),
            description=clip(hit.highlight, 200),
        )
        for number, hit in enumerate(answer.hits, start=answer.offset + 1)
    ]


def private_chat_first(username: str | None) -> str:
    """ "Tell me when this is covered" confirmed in a group. Telegram refuses a bot's first
    message to someone who never opened a private chat with it, so the promise says how."""
    return COVERAGE_IN_GROUP.format(link=f" (t.me/{username})" if username else "")


def render_update(item: UpdateItem, body_chars: int = 1500) -> str:
    areas = ", ".join(escape(a.title) for a in item.areas) if len(item.areas) < 9 else "all areas"
    body = f"{escape(clip(item.body, body_chars))}\n" if body_chars else ""
    return (
        f"<b>{escape(clip(item.title, 300))}</b>\n<i>{item.date:%d %B %Y} · {areas}</i>\n"
        f'{body}🔗 <a href="{escape(item.url)}">Read more</a>'
    )


def render_bulletin(bulletin: Bulletin) -> str:
    """An update as subscribers receive it; a weekly digest lists several, newest last.

    It is one message, so a long digest shortens each update's text (then leaves it out) to
    keep every update's title and link; only if even those do not fit are the oldest named by
    /updates instead.
    """
    head = "📬 <b>Your weekly ipbot digest</b>" if bulletin.digest else "📢 <b>ipbot update</b>"
    footer = "<i>/unsubscribe to stop these messages, /subscriptions to see what you receive.</i>"
    items = list(bulletin.items)
    for body_chars in (1500, 600, 300, 150, 0):
        text = "\n\n".join([head, *(render_update(i, body_chars) for i in items), footer])
        if visible_length(text) <= LIMIT:
            return text
    while len(items) > 1 and visible_length(text) > LIMIT:
        items = items[1:]  # the newest stay
        older = f"<i>{len(bulletin.items) - len(items)} earlier updates: see /updates.</i>"
        text = "\n\n".join([head, older, *(render_update(i, 0) for i in items), footer])
    return text


def render_report(report: DeliveryReport) -> str:
    """The publishing moderator's live view of a broadcast."""
    s = report.status
    state = "done" if s.done else "sending…"
    return (
        f"<b>Delivery of “{escape(clip(report.title, 200))}”</b> ({state})\n"
        f"Subscribers: {s.subscribers}\nSent: {s.sent}\nPending: {s.pending}\n"
        f"In weekly digests: {s.scheduled}\n"
        f"Failed: {s.failed}\nBlocked: {s.blocked}\nUncertain: {s.uncertain}"
    )


def render_personal(message: PersonalMessage) -> str:
    """A message to one person; cited passages (a question now covered) look as in answers."""
    rest = [f"<b>{escape(message.lead)}</b>"] if message.lead else []
    rest += [format_hit(number, hit) for number, hit in enumerate(message.hits, start=1)]
    if message.hits:
        rest.append(f"<i>{escape(DISCLAIMER)}</i>")
    # one message: the text (which may quote a long question) gives way to the passages
    text = message.text
    while True:
        whole = "\n\n".join([escape(text), *rest])
        over = visible_length(whole) - LIMIT
        if over <= 0 or len(text) <= 200:
            return whole
        text = clip(text, max(200, len(text) - over - 1))


def render_message(message: Outbound) -> str:
    """What the sender sends: an update, a moderator's delivery report, a personal message."""
    match message:
        case Bulletin():
            return render_bulletin(message)
        case PersonalMessage():
            return render_personal(message)
    return render_report(message)
