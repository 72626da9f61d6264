"""The Telegram adapter: Bot API updates in, the assistant's replies out (see telegram_format).

It only translates, on python-telegram-bot's async `Application` with long polling (or a
webhook served by bot.http), and handles what Telegram itself needs: groups, buttons, inline
mode, flood control, errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from http import HTTPStatus
from typing import Any, Literal

from aiohttp import web
from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    MaybeInaccessibleMessage,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import (
    ChatAction,
    ChatMemberStatus,
    ChatType,
    MessageEntityType,
    ParseMode,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    Application,
    BaseRateLimiter,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    InlineQueryHandler,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import metrics
from bot.assistant import EXPIRED, Assistant
from bot.commands import ALIASES, COMMANDS, public_commands
from bot.http import Receiver, WebhookSlot
from bot.leadership import first_of, once_among_replicas
from bot.replies import (
    SMALL_TALK,
    SORRY,
    AnswerReply,
    Chat,
    Context,
    Notice,
    Quiet,
    Reply,
    User,
)
from bot.sender import DeliveryResult, Outbound, Outcome, Target
from bot.settings import Settings, SettingsError
from bot.store import Store
from bot.telegram_format import (
    ANNOUNCE,
    AREA,
    COVER,
    DECIDE,
    MORE,
    SOURCES,
    VOTE,
    Outgoing,
    escape,
    format_source,
    inline_results,
    pack,
    private_chat_first,
    render,
    render_message,
)

log = logging.getLogger(__name__)

START_RETRY_FIRST, START_RETRY_MAX = 1.0, 30.0  # seconds between attempts to reach Telegram
MAX_RETRY_WAIT = 60.0  # seconds; a longer flood wait fails the request instead of stalling it
INLINE_CACHE_SECONDS = 60
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.INLINE_QUERY]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # carries the secret given at setWebhook
WEBHOOK_CHECK_SECONDS = 60.0


# Sending.
async def send(
    context: ContextTypes.DEFAULT_TYPE,
    chat_id: int,
    out: Outgoing,
    quote: Message | None = None,
    beside: MaybeInaccessibleMessage | None = None,
) -> None:
    """Send the pieces in order: the first quotes the question in groups, the last has buttons.

    In a forum group they go to the topic of `quote`, or of `beside` (the bot's message whose
    button was pressed): without it Telegram posts them to the General topic.
    """
    reply_to, thread = placement(quote, beside)
    for number, text in enumerate(out.texts, start=1):
        await context.bot.send_message(
            chat_id,
            text,
            reply_markup=out.keyboard if number == len(out.texts) else None,
            reply_parameters=reply_to if number == 1 else None,
            message_thread_id=thread,
        )


def placement(
    quote: Message | None, beside: MaybeInaccessibleMessage | None
) -> tuple[ReplyParameters | None, int | None]:
    """What a reply quotes, and the forum topic it goes to.

    Under an old message Telegram sends a button press without the message's topic (an
    InaccessibleMessage, or a message without its thread id): a reply to that message still
    lands in its topic, where a message without a topic would land in General.
    """
    if quote is not None:
        private = quote.chat.type == ChatType.PRIVATE
        return None if private else replying_to(quote), topic_of(quote)
    if beside is None or beside.chat.type == ChatType.PRIVATE:
        return None, None
    if isinstance(beside, Message) and (beside.is_topic_message or not beside.chat.is_forum):
        return None, topic_of(beside)
    return replying_to(beside), None


def replying_to(message: MaybeInaccessibleMessage) -> ReplyParameters:
    return ReplyParameters(message.message_id, allow_sending_without_reply=True)


async def send_beside(update: Update, context: ContextTypes.DEFAULT_TYPE, out: Outgoing) -> None:
    """What a button press sends, as new messages in the chat (and forum topic) of the
    message the button is under."""
    if update.effective_chat is not None:
        await send(context, update.effective_chat.id, out, beside=pressed_under(update))


def pressed_under(update: Update) -> MaybeInaccessibleMessage | None:
    """The bot's message a button was pressed under, also when too old to be sent in full
    (`effective_message` is then None)."""
    return update.callback_query.message if update.callback_query is not None else None


def topic_of(message: Message | None) -> int | None:
    """The forum topic a message is in (None outside forum groups and in their General topic)."""
    return message.message_thread_id if message is not None and message.is_topic_message else None


def typing_in(message: Message) -> Callable[[], Awaitable[None]]:
    """Shows "typing..." in the message's chat, for the assistant to call once it takes a question."""

    async def show_typing() -> None:
        with contextlib.suppress(TelegramError):  # a missing "typing..." must not cost the answer
            await message.reply_chat_action(ChatAction.TYPING)

    return show_typing


@contextlib.contextmanager
def unless_unchanged() -> Iterator[None]:
    """An edit that changes nothing (a double tap) is refused by Telegram: nothing to do."""
    try:
        yield
    except BadRequest as exc:
        if "not modified" not in exc.message:
            raise


# Telegram's refusals of a message in a chat where the bot has no right to write, or in a
# closed topic: an apology there would be refused again
UNSENDABLE = ("not enough rights", "have no rights", "topic_closed", "chat_write_forbidden")


async def acknowledge(
    update: Update,
    context: ContextTypes.DEFAULT_TYPE,
    text: str | None = None,
    alert: bool = False,
) -> None:
    """Answer a button press (with `text` as a toast or an alert).

    Telegram keeps presses made while the bot was down and refuses to have them answered
    later ("query is too old"); the press still does its job, and `text`, which the user would
    have seen over the button, comes as a message instead.
    """
    assert update.callback_query is not None
    try:
        await update.callback_query.answer(text, show_alert=alert)
    except BadRequest as exc:
        log.info("Telegram: a button press could not be answered: %s", exc.message)
        if text:
            await send_beside(update, context, Outgoing((escape(text),)))


def pressed(
    update: Update, context: ContextTypes.DEFAULT_TYPE
) -> tuple[CallbackQuery, tuple[str, ...]]:
    """A button press and the fields of its data (matched by the handler's pattern)."""
    assert update.callback_query is not None
    match = context.match
    return update.callback_query, match.groups() if match else ()


def assistant_of(context: ContextTypes.DEFAULT_TYPE) -> Assistant:
    return context.bot_data["assistant"]


def user_of(update: Update) -> User:
    """Who asks: the person, or the chat a message was posted as. Telegram names one account as
    the sender for every anonymous administrator of every group (GroupAnonymousBot), and one
    for everyone posting as a channel: only `sender_chat` tells them apart. (A button press
    always names the person who pressed.)"""
    assert update.effective_user is not None
    user = update.effective_user
    as_chat = update.message.sender_chat if update.message is not None else None
    who = f"chat{as_chat.id}" if as_chat is not None else str(user.id)
    return User("telegram", who, user.language_code)


def inline_user_of(update: Update) -> User:
    """The user of an inline query, under a rate-limit key of its own: Telegram sends a query at
    each pause in typing, and those must not use up the budget of the user's chat questions."""
    user = user_of(update)
    return replace(user, id=f"inline{user.id}")


def context_of(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Context:
    """Who asks where; in a group, whether they administer it is asked of Telegram when needed."""
    user, chat = user_of(update), update.effective_chat
    assert chat is not None
    kinds = {ChatType.PRIVATE: "private", ChatType.CHANNEL: "channel"}
    kind = kinds.get(ChatType(chat.type), "group") if chat.type in kinds else "group"

    message = update.effective_message
    sender_chat = update.message.sender_chat if update.message is not None else None
    topic = topic_of(message)
    person = update.effective_user
    assert person is not None

    async def is_admin() -> bool:
        # posted as the group: only its administrators can; as a channel: no one to ask about
        if sender_chat is not None:
            return sender_chat.id == chat.id
        try:
            member = await context.bot.get_chat_member(chat.id, person.id)
        except TelegramError as exc:
            log.warning("Telegram: could not check a group administrator: %s", exc)
            return False
        return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)

    thread = str(topic) if topic is not None else None
    return Context(user, Chat("telegram", str(chat.id), kind), is_admin, thread=thread)


def addressing(message: Message, bot_id: int, username: str) -> Literal["mention", "reply"] | None:
    """How a group message speaks to the bot: "mention", or "reply" (to one of its messages);
    None for chatter. A reply that mentions someone else is people talking under an answer,
    as a thread message that mentions others is on Discord."""
    mine = {f"@{username}".lower(), f"id:{bot_id}"}
    mentions = mentioned_in(message)
    if mentions & mine:
        return "mention"
    replied = message.reply_to_message is not None and (
        message.reply_to_message.from_user is not None
        and message.reply_to_message.from_user.id == bot_id
    )
    return "reply" if replied and not mentions - mine else None


def mentioned_in(message: Message) -> set[str]:
    """Who a message (or a photo's caption) mentions: "@username" in lower case, or "id:N" for
    someone picked by name (a text_mention, for people without a username)."""
    kinds: list[str | None] = [MessageEntityType.MENTION, MessageEntityType.TEXT_MENTION]
    found = message.parse_entities(kinds) if message.text else message.parse_caption_entities(kinds)
    return {f"id:{e.user.id}" if e.user else text.lower() for e, text in found.items()}


def question_in(message: Message, username: str) -> str:
    """A group message's text (a photo's caption can ask too) without the bot's @username."""
    text = message.text or message.caption or ""
    return re.sub(re.escape(f"@{username}"), " ", text, flags=re.IGNORECASE)


def is_chatter(reply: Reply) -> bool:
    """Whether the assistant read a message as no question to it: small talk ("thanks", "lol",
    an emoji) or a decline as no question about IP. Under an answer in a group that is people
    talking: a "you're welcome" or a decline there would only interrupt them."""
    if isinstance(reply, Notice):
        return reply.kind in SMALL_TALK
    return isinstance(reply, AnswerReply) and not (reply.answer.answered or reply.answer.about_ip)


def addressee(message: Message) -> str | None:
    """The bot a command names (/foo@somebot), in lower case; None for a bare /foo."""
    command = (message.text or "/").split(maxsplit=1)[0]
    _, at, name = command.partition("@")
    return name.lower() if at else None


def replied_answer(message: Message, bot_id: int) -> int | None:
    """The stored question of the bot's answer that `message` replies to (its buttons carry
    the question's id), or None."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != bot_id:
        return None
    markup = replied.reply_markup
    for row in markup.inline_keyboard if markup else ():
        for button in row:
            for pattern in (MORE, SOURCES, VOTE, COVER):  # each carries the question's id first
                if match := re.match(pattern, str(button.callback_data or "")):
                    return int(match.group(1))
    return None


async def continue_replied(message: Message, context: ContextTypes.DEFAULT_TYPE, at: Context) -> None:
    """A reply to one of the bot's answers continues that answer's question, not the person's
    latest one: "and for software?" under yesterday's answer, or under another member's."""
    question_id = replied_answer(message, context.bot.id)
    if question_id is None:
        return
    assistant = assistant_of(context)
    try:
        asked = await assistant.store.question(question_id)
    except Exception as exc:  # without the store, the reply is read as it comes
        log.warning("Telegram: the answered question could not be read: %r", exc)
        return
    if asked is not None:
        assistant.conversations.remember(at.conversation, asked.text)


# Handlers.
async def on_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A command (ours anywhere, any in private): the assistant reads it as the console does."""
    message = update.effective_message
    assert message is not None
    text = " ".join((message.text or "").split())
    reply = await assistant_of(context).handle(
        context_of(update, context), text, typing_in(message)
    )
    await send(context, message.chat_id, render(reply), quote=message)


async def on_private_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """In a private chat any message is a question (a photo's caption too; a sticker gets help),
    or the next step of an exchange such as /suggest."""
    message = update.effective_message
    assert message is not None
    question = message.text or message.caption or ""
    at = context_of(update, context)
    await continue_replied(message, context, at)
    reply = await assistant_of(context).handle(at, question, typing_in(message))
    await send(context, message.chat_id, render(reply), quote=message)


async def on_group_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A command we do not have, in a group: "I don't know /foo" when it names this bot
    (/foo@ipbot); a bare /foo may be for another bot there, so it is left alone."""
    message = update.effective_message
    assert message is not None
    if addressee(message) == context.bot.username.lower():
        await on_command(update, context)


async def on_group_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """In a group only a mention of the bot or a reply to it is for the bot (a question, or
    the line a moderator was asked for after Reject); chatter is ignored, and so is small talk
    in a reply ("thanks", "lol"): only a mention gets an answer to that."""
    message, bot = update.effective_message, context.bot
    assert message is not None
    how = addressing(message, bot.id, bot.username)
    if how is None:
        return
    at = context_of(update, context)
    await continue_replied(message, context, at)
    question = question_in(message, bot.username)
    reply = await assistant_of(context).handle(at, question, typing_in(message))
    if how == "reply" and is_chatter(reply):
        return
    await send(context, message.chat_id, render(reply), quote=message)


async def on_more(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The More button: the next passages for the same question, as a new message."""
    _, (question_id, offset) = pressed(update, context)
    reply = await assistant_of(context).more(user_of(update), int(question_id), int(offset))
    if isinstance(reply, Notice) and reply.kind == "expired":
        await acknowledge(update, context, reply.text, alert=True)
        return
    await acknowledge(update, context)
    await send_beside(update, context, render(reply))


async def on_sources(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The Sources button: each cited passage in full, folded in an expandable quote."""
    _, (question_id, offset) = pressed(update, context)
    passages = await assistant_of(context).sources(user_of(update), int(question_id), int(offset))
    if isinstance(passages, Notice):
        await acknowledge(update, context, passages.text, alert=True)
        return
    await acknowledge(update, context)
    await send_beside(update, context, Outgoing(pack(format_source(p) for p in passages)))


async def on_browse(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """An area button: the area's first page as a new message, or another page in place."""
    query, (slug, page, in_place) = pressed(update, context)
    await acknowledge(update, context)
    out = render(assistant_of(context).browse(slug, int(page)))
    if in_place == "1":
        try:
            with unless_unchanged():
                await query.edit_message_text(out.texts[0], reply_markup=out.keyboard)
            return
        except BadRequest as exc:  # too old to edit, or deleted: the page comes as a message
            log.info("Telegram: an area page could not be edited: %s", exc.message)
    await send_beside(update, context, out)


async def on_vote(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Helpful / not helpful: recorded for moderators, then, in a private chat, the vote buttons
    disappear (in a group every member may vote once: they stay)."""
    query, (question_id, sign) = pressed(update, context)
    notice = await assistant_of(context).vote(user_of(update), int(question_id), sign == "+")
    await acknowledge(update, context, notice.text)
    message = query.message
    private = isinstance(message, Message) and message.chat.type == ChatType.PRIVATE
    if private and isinstance(message, Message) and message.reply_markup:
        rows = [
            [b for b in row if not str(b.callback_data).startswith("fb:")]
            for row in message.reply_markup.inline_keyboard
        ]
        markup = InlineKeyboardMarkup([row for row in rows if row])
        with unless_unchanged():
            await query.edit_message_reply_markup(markup)


async def on_announce(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Confirm or Cancel under an announcement preview (moderators only)."""
    query, (token, choice) = pressed(update, context)
    notice = await assistant_of(context).announce_choice(
        context_of(update, context), token, confirm=choice == "y"
    )
    if notice.kind == "refused":  # someone else in the chat: only they see it, buttons stay
        await acknowledge(update, context, notice.text, alert=True)
        return
    await acknowledge(update, context, "Cancelled." if notice.kind == "cancelled" else None)
    with unless_unchanged():
        await query.edit_message_reply_markup(None)
    if notice.kind != "cancelled":
        await send_beside(update, context, render(notice))


async def on_cover(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """ "Tell me when this is covered": stored on this opt-in only, then confirmed. In a group
    the confirmation says how to let the bot write privately: Telegram refuses a bot's first
    message to someone who never opened a private chat with it."""
    _, (question_id,) = pressed(update, context)
    notice = await assistant_of(context).follow(user_of(update), int(question_id))
    text = notice.text
    chat = update.effective_chat
    if notice.kind == "coverage" and chat is not None and chat.type != ChatType.PRIVATE:
        text = private_chat_first(context.bot.username)
    await acknowledge(update, context, text, alert=True)


async def on_decide(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Accept or Reject under /queue (moderators only): the outcome comes as a message."""
    _, (suggestion_id, choice) = pressed(update, context)
    notice = await assistant_of(context).decide(
        context_of(update, context), int(suggestion_id), choice == "a"
    )
    await acknowledge(update, context)
    await send_beside(update, context, render(notice))


async def on_expired_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button whose data this version does not know (an old or forged one): say so."""
    await acknowledge(update, context, EXPIRED, alert=True)


async def on_inline_query(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`@bot question` in any chat: cited passages to share, paged as the user scrolls."""
    query = update.inline_query
    assert query is not None
    if not query.query.strip():
        await query.answer([], cache_time=INLINE_CACHE_SECONDS)
        return
    offset = int(query.offset) if query.offset.isdigit() else 0
    reply = await assistant_of(context).ask(
        inline_user_of(update), query.query, offset=offset, remember=False
    )
    if isinstance(reply, Quiet):
        return
    more = isinstance(reply, AnswerReply) and reply.answer.has_more
    next_offset = str(offset + len(reply.answer.hits)) if more else ""  # type: ignore[union-attr]
    # All results are personal: Telegram would show shared ones to anyone typing the same
    # words, and passages are read in a language that follows the user's own. A notice (slow
    # down, hello) is about this moment: not cached at all.
    cache_time = 0 if isinstance(reply, Notice) else INLINE_CACHE_SECONDS
    await query.answer(
        inline_results(reply), cache_time=cache_time, is_personal=True, next_offset=next_offset
    )


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log what failed, with context and never the token, and tell the user politely."""
    error = context.error
    if isinstance(error, Forbidden):  # the user blocked the bot or left: nobody to tell
        log.info("Telegram: a chat is no longer reachable: %s", error)
        return
    if isinstance(error, BadRequest) and any(m in error.message.lower() for m in UNSENDABLE):
        log.warning("Telegram: the bot may not write there: %s", error.message)  # nor apologise
        return
    kind = next((k for k in ALLOWED_UPDATES if getattr(update, k, None)), "unknown")
    update_id = getattr(update, "update_id", "?")
    log.error("Telegram: handling update %s (%s) failed", update_id, kind, exc_info=error)
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    if update.callback_query:
        with contextlib.suppress(TelegramError):  # a press too old to answer: apologise anyway
            await update.callback_query.answer()
    with contextlib.suppress(TelegramError):
        topic = topic_of(update.effective_message)
        await context.bot.send_message(
            update.effective_chat.id, escape(SORRY), message_thread_id=topic
        )


class RetryAfterLimiter(BaseRateLimiter[None]):
    """Waits out Telegram's flood control (429 with retry_after) and tries again, a few times."""

    def __init__(self, max_retries: int = 3, max_wait: float = MAX_RETRY_WAIT):
        self.max_retries, self.max_wait = max_retries, max_wait

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):  # type: ignore[no-untyped-def]
        for attempt in range(self.max_retries + 1):
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                wait = retry_seconds(exc)
                if attempt == self.max_retries or wait > self.max_wait:
                    raise
                log.warning("Telegram flood control on %s: retrying in %.0f s", endpoint, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")


def retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # int or timedelta, depending on PTB_TIMEDELTA
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def file_url_for(base_url: str) -> str:
    """Telegram serves files under /file/bot<token>; a custom server mirrors that layout."""
    head, found, tail = base_url.rpartition("/bot")
    return f"{head}/file/bot{tail}" if found else base_url


class PollingRequest(HTTPXRequest):
    """The connection for getUpdates, which notices when Telegram rejects the token.

    python-telegram-bot then ends polling for good but leaves the Application running: a
    bot that never answers again, yet looks healthy to a supervisor. `token_rejected` lets
    the adapter end instead (see serve_until_stopped).
    """

    def __init__(self) -> None:
        super().__init__()
        self.token_rejected = asyncio.Event()

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(*args, **kwargs)
        if code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.NOT_FOUND):  # the library's InvalidToken
            self.token_rejected.set()
        elif code == HTTPStatus.OK:
            metrics.LIVENESS.seen("telegram")  # a long poll returns at least every 10 s
        return code, payload


def build_application(
    assistant: Assistant, settings: Settings, updates: PollingRequest | None = None
) -> Application:
    """The Application with every handler registered, talking to `settings.telegram_api_url`."""
    if settings.telegram_token is None:
        raise ValueError("IPBOT_TELEGRAM_TOKEN is not set")
    for noisy in ("httpx", "httpcore"):  # they log request URLs, and the URL holds the token
        logging.getLogger(noisy).setLevel(logging.WARNING)
    defaults = Defaults(
        parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True)
    )
    builder = Application.builder()
    if updates is not None:
        builder = builder.get_updates_request(updates)
    application = (
        builder.token(settings.telegram_token.get_secret_value())
        .base_url(settings.telegram_api_url)
        .base_file_url(file_url_for(settings.telegram_api_url))
        .defaults(defaults)
        .rate_limiter(RetryAfterLimiter())
        .concurrent_updates(True)
        .build()
    )
    application.bot_data["assistant"] = assistant
    new = filters.UpdateType.MESSAGE
    ours = [c.name for c in COMMANDS] + list(ALIASES)
    application.add_handlers(
        [
            CommandHandler(ours, on_command, filters=new),
            MessageHandler(new & filters.COMMAND & filters.ChatType.PRIVATE, on_command),
            MessageHandler(new & filters.COMMAND & filters.ChatType.GROUPS, on_group_command),
            MessageHandler(
                new & ~filters.COMMAND & ~filters.StatusUpdate.ALL & filters.ChatType.PRIVATE,
                on_private_text,
            ),  # a pin or a timer change is no message to answer
            MessageHandler(
                new & (filters.TEXT | filters.CAPTION) & ~filters.COMMAND & filters.ChatType.GROUPS,
                on_group_text,
            ),
            CallbackQueryHandler(on_more, pattern=MORE),
            CallbackQueryHandler(on_sources, pattern=SOURCES),
            CallbackQueryHandler(on_browse, pattern=AREA),
            CallbackQueryHandler(on_vote, pattern=VOTE),
            CallbackQueryHandler(on_announce, pattern=ANNOUNCE),
            CallbackQueryHandler(on_cover, pattern=COVER),
            CallbackQueryHandler(on_decide, pattern=DECIDE),
            CallbackQueryHandler(on_expired_button),
            InlineQueryHandler(on_inline_query),
        ]
    )
    application.add_error_handler(on_error)
    return application


def log_polling_error(exc: TelegramError) -> None:
    log.warning("Telegram: polling failed (%s); retrying", exc)


async def register_menu(application: Application) -> None:
    """The command menu Telegram shows under "/", from the command registry."""
    commands = [BotCommand(c.name, c.description) for c in public_commands()]
    await application.bot.set_my_commands(commands)


@contextlib.asynccontextmanager
async def polling(application: Application) -> AsyncIterator[Application]:
    """Initialise, register the command menu and poll; on exit confirm updates and stop."""
    async with application:
        await register_menu(application)
        await application.updater.start_polling(  # type: ignore[union-attr]
            allowed_updates=ALLOWED_UPDATES, error_callback=log_polling_error
        )
        await application.start()
        try:
            yield application
        finally:
            updater = application.updater
            if updater is not None and updater.running:
                # polling that died of a rejected token re-raises that error here
                with contextlib.suppress(TelegramError):
                    await updater.stop()
            await application.stop()


def webhook_receiver(application: Application, secret: str, store: Store) -> Receiver:
    """The aiohttp handler for Telegram's POSTs: checks the secret, then queues the update.

    A request without the secret Telegram was given at setWebhook is refused (403) before
    anything in it is read: only Telegram knows the secret. An update already taken (by
    this replica or another: Telegram retries a slow answer, a load balancer may repeat a
    request) is acknowledged and not answered again.
    """

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            log.warning("Telegram webhook: refused a request without the right secret")
            return web.json_response({"error": "forbidden"}, status=403)
        try:
            update = Update.de_json(await request.json(), application.bot)
        except (ValueError, TypeError, KeyError, AttributeError):
            return web.json_response({"error": "not an update"}, status=400)
        metrics.LIVENESS.seen("telegram")
        if not await first_sight(store, update):
            return web.json_response({"ok": True})
        await application.update_queue.put(update)  # answered like a polled update
        return web.json_response({"ok": True})

    return receive


SETUP_JOB = "telegram-setup"


def setup_digest(settings: Settings) -> str:
    """What the webhook set-up registers: the bot (token), URL, secret and command menu."""
    parts = [
        settings.telegram_token.get_secret_value() if settings.telegram_token else "",
        settings.telegram_webhook_url or "",
        settings.telegram_webhook_secret.get_secret_value()
        if settings.telegram_webhook_secret
        else "",
        *(f"{c.name}={c.description}" for c in public_commands()),
        ",".join(ALLOWED_UPDATES),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


async def first_sight(store: Store, update: Update) -> bool:
    """Whether this update is new to every replica; with the database down, answer anyway."""
    try:
        return await store.first_sight("telegram", str(update.update_id))
    except Exception as exc:
        log.warning("Telegram: cannot check for a repeated update (%s)", type(exc).__name__)
        return True


@contextlib.asynccontextmanager
async def receiving_webhook(
    application: Application, settings: Settings, slot: WebhookSlot, store: Store
) -> AsyncIterator[Application]:
    """Initialise, register the menu and the webhook, and receive through `slot`.

    On exit the slot answers 503 first (Telegram keeps those updates and retries), then the
    updates already queued are answered. The webhook stays set, so nothing is lost while
    ipbot restarts; polling mode removes it at start.
    """
    assert settings.telegram_webhook_url and settings.telegram_webhook_secret
    secret = settings.telegram_webhook_secret.get_secret_value()
    async with application:
        async with once_among_replicas(store, SETUP_JOB, setup_digest(settings)) as due:
            if due:  # one replica registers the menu and the webhook, once per configuration
                await register_menu(application)
                await set_webhook(application, settings)
        metrics.LIVENESS.seen("telegram")
        await application.start()
        slot.attach(webhook_receiver(application, secret, store))
        try:
            yield application
        finally:
            slot.detach()
            await application.stop()


async def set_webhook(application: Application, settings: Settings) -> None:
    assert settings.telegram_webhook_url and settings.telegram_webhook_secret
    await application.bot.set_webhook(
        settings.telegram_webhook_url,
        secret_token=settings.telegram_webhook_secret.get_secret_value(),
        allowed_updates=ALLOWED_UPDATES,
        drop_pending_updates=False,
    )


async def watch_webhook(application: Application, settings: Settings, stop: asyncio.Event) -> None:
    """Ask Telegram how the webhook fares, every minute, until `stop`: its last error is logged,
    each answer counts as contact for /readyz, a webhook removed or changed elsewhere is set
    again, and a revoked token ends the adapter."""
    reported = None
    while not stop.is_set():
        try:
            info = await application.bot.get_webhook_info()
            if info.url != settings.telegram_webhook_url:
                log.warning("Telegram: the webhook was removed or changed elsewhere; setting it")
                await set_webhook(application, settings)
        except (InvalidToken, Forbidden):
            raise
        except TelegramError as exc:
            log.warning("Telegram: cannot check the webhook (%s)", exc)
        else:
            metrics.LIVENESS.seen("telegram")
            if info.last_error_message and info.last_error_date != reported:
                reported = info.last_error_date
                log.warning(
                    "Telegram: the webhook's last delivery failed: %s", info.last_error_message
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WEBHOOK_CHECK_SECONDS)


async def run_telegram(
    assistant: Assistant,
    settings: Settings,
    stop: asyncio.Event,
    webhook: WebhookSlot | None = None,
) -> None:
    """Answer on Telegram until `stop` is set (what `ipbot run` calls); through `webhook`
    when given (IPBOT_TELEGRAM_WEBHOOK_URL), else by long polling.

    A token Telegram rejects or refuses, at start or later, is a SettingsError: retrying
    cannot help, so ipbot ends and says so. Secrets in messages are redacted process-wide
    (bot.redact), as python-telegram-bot puts the token in every URL it reports.
    """
    try:
        await serve_until_stopped(assistant, settings, stop, webhook)
    except InvalidToken:
        raise SettingsError("Telegram rejected IPBOT_TELEGRAM_TOKEN; check the token") from None
    except Forbidden as exc:
        raise SettingsError(f"Telegram refused IPBOT_TELEGRAM_TOKEN: {exc}") from None
    log.info("Telegram: stopped")


async def serve_until_stopped(
    assistant: Assistant, settings: Settings, stop: asyncio.Event, slot: WebhookSlot | None
) -> None:
    """Start, retrying while Telegram is unreachable (the library retries once running)."""
    wait = START_RETRY_FIRST
    while not stop.is_set():
        updates = PollingRequest()
        application = build_application(assistant, settings, updates)
        try:
            if slot is not None:
                async with receiving_webhook(application, settings, slot, assistant.store):
                    log.info("Telegram: answering as @%s by webhook", application.bot.username)
                    await watch_webhook(application, settings, stop)
                return
            with contextlib.suppress(Exception):  # polling removes the webhook: set it again later
                await assistant.store.set_meta(SETUP_JOB, "polling")
            async with polling(application):
                log.info("Telegram: answering as @%s", application.bot.username)
                await first_of(stop, updates.token_rejected)
                if updates.token_rejected.is_set():
                    raise InvalidToken("Telegram rejected the token while polling")
                return
        except NetworkError as exc:  # includes timeouts and 5xx answers, not a bad token
            log.warning("Telegram: cannot start (%s); retrying in %.0f s", exc, wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        wait = min(wait * 2, START_RETRY_MAX)


# Sending first: broadcasts through the outbox (bot/sender.py).
class TelegramOutlet:
    """Telegram's sending side for broadcasts: its own Bot and connection pool, no retries.

    Flood control is the sender's to honour (for all sends at once), so a 429 comes back as
    a result instead of being slept on here, and broadcasts never queue behind replies.
    """

    platform = "telegram"
    resends_safely = False  # the Bot API has no idempotency key

    def __init__(self, settings: Settings):
        from telegram import Bot
        from telegram.request import HTTPXRequest

        token = settings.telegram_token.get_secret_value()  # type: ignore[union-attr]
        self.bot = Bot(
            token,
            base_url=settings.telegram_api_url,
            base_file_url=file_url_for(settings.telegram_api_url),
            request=HTTPXRequest(connection_pool_size=16, read_timeout=15),
        )

    async def start(self) -> None:
        await self.bot.initialize()

    async def close(self) -> None:
        await self.bot.shutdown()

    async def send(
        self, target: Target, message: Outbound, nonce: str | None = None
    ) -> DeliveryResult:
        async with delivery_errors() as result:
            sent = await self.bot.send_message(
                int(target.chat_id),
                render_message(message),
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
            result.append(DeliveryResult(Outcome.DELIVERED, message_id=str(sent.message_id)))
        return result[-1]

    async def edit(self, target: Target, message_id: str, message: Outbound) -> DeliveryResult:
        async with delivery_errors() as result:
            with unless_unchanged():
                await self.bot.edit_message_text(
                    render_message(message),
                    chat_id=int(target.chat_id),
                    message_id=int(message_id),
                    parse_mode=ParseMode.HTML,
                )
            result.append(DeliveryResult(Outcome.DELIVERED, message_id=message_id))
        return result[-1]


@contextlib.asynccontextmanager
async def delivery_errors() -> AsyncIterator[list[DeliveryResult]]:
    """Translate the Bot API's answers to a send into the sender's outcomes."""
    results: list[DeliveryResult] = []
    try:
        yield results
    except RetryAfter as exc:
        results.append(DeliveryResult(Outcome.RETRY, retry_after=retry_seconds(exc), detail="429"))
    except ChatMigrated as exc:
        results.append(DeliveryResult(Outcome.MOVED, new_chat_id=str(exc.new_chat_id)))
    except Forbidden as exc:
        results.append(DeliveryResult(Outcome.BLOCKED, detail=exc.message))
    except BadRequest as exc:
        gone = "chat not found" in exc.message.lower() or "deactivated" in exc.message.lower()
        outcome = Outcome.BLOCKED if gone else Outcome.FAILED
        results.append(DeliveryResult(outcome, detail=exc.message))
    except (NetworkError, TelegramError) as exc:  # timeouts and 5xx: worth another try
        results.append(DeliveryResult(Outcome.RETRY, detail=type(exc).__name__))
