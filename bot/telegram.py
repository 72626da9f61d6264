"""The Telegram adapter: Bot API updates in, the assistant's replies out (see telegram_format).

It only translates, on python-telegram-bot's async `Application` with long polling, and
handles what Telegram itself needs: groups, buttons, inline mode, flood control, errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType, MessageEntityType, ParseMode
from telegram.error import (
    BadRequest,
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
    InvalidCallbackData,
    MessageHandler,
    filters,
)

from bot.assistant import COMMANDS, AnswerReply, Assistant, User
from bot.conversation import chat_key
from bot.settings import Settings
from bot.telegram_format import (
    BrowseArea,
    MorePassages,
    Outgoing,
    ShowSources,
    Vote,
    escape,
    format_source,
    inline_results,
    pack,
    render,
)

log = logging.getLogger(__name__)

START_RETRY_FIRST, START_RETRY_MAX = 1.0, 30.0  # seconds between attempts to reach Telegram
MAX_RETRY_WAIT = 60.0  # seconds; a longer flood wait fails the request instead of stalling it
INLINE_CACHE_SECONDS = 60
SORRY = "Sorry, something went wrong on my side. Please try again in a moment."
EXPIRED = "This button has expired. Please ask your question again."
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.INLINE_QUERY]


# Sending.
async def send(
    context: ContextTypes.DEFAULT_TYPE, chat_id: int, out: Outgoing, quote: Message | None = None
) -> None:
    """Send the pieces in order: the first quotes the question in groups, the last has buttons."""
    reply_to = None
    if quote is not None and quote.chat.type != ChatType.PRIVATE:
        reply_to = ReplyParameters(quote.message_id, allow_sending_without_reply=True)
    thread = quote.message_thread_id if quote is not None and quote.is_topic_message else None
    for number, text in enumerate(out.texts, start=1):
        await context.bot.send_message(
            chat_id,
            text,
            reply_markup=out.keyboard if number == len(out.texts) else None,
            reply_parameters=reply_to if number == 1 else None,
            message_thread_id=thread,
        )


async def show_typing(message: Message) -> None:
    with contextlib.suppress(TelegramError):  # a missing "typing..." must not cost the answer
        await message.reply_chat_action(ChatAction.TYPING)


@contextlib.contextmanager
def unless_unchanged() -> Iterator[None]:
    """An edit that changes nothing (a double tap) is refused by Telegram: nothing to do."""
    try:
        yield
    except BadRequest as exc:
        if "not modified" not in exc.message:
            raise


def pressed(update: Update) -> tuple[CallbackQuery, Any]:
    """A button press and its payload (the object the button was made with)."""
    assert update.callback_query is not None
    return update.callback_query, update.callback_query.data


def assistant_of(context: ContextTypes.DEFAULT_TYPE) -> Assistant:
    return context.bot_data["assistant"]


def user_of(update: Update) -> User:
    assert update.effective_user is not None
    return User("telegram", str(update.effective_user.id))


def addressed_question(message: Message, bot_id: int, username: str) -> str | None:
    """The question in a group message that mentions or replies to the bot; None for chatter."""
    mention = f"@{username}".lower()
    mentions = message.parse_entities([MessageEntityType.MENTION]).values()
    mentioned = any(text.lower() == mention for text in mentions)
    replied = message.reply_to_message is not None and (
        message.reply_to_message.from_user is not None
        and message.reply_to_message.from_user.id == bot_id
    )
    if not (mentioned or replied):
        return None
    return re.sub(re.escape(mention), " ", message.text or "", flags=re.IGNORECASE)


# Handlers.
async def on_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A command (ours anywhere, any in private): the assistant reads it as the console does."""
    message = update.effective_message
    assert message is not None
    await show_typing(message)
    text = " ".join((message.text or "").split())
    conversation = chat_key("telegram", message.chat_id)
    reply = await assistant_of(context).handle_text(user_of(update), text, conversation)
    await send(context, message.chat_id, render(reply), quote=message)


async def on_private_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """In a private chat any message is a question (a photo's caption too; a sticker gets help)."""
    message = update.effective_message
    assert message is not None
    await show_typing(message)
    reply = await assistant_of(context).ask(
        user_of(update),
        message.text or message.caption or "",
        conversation=chat_key("telegram", message.chat_id),
    )
    await send(context, message.chat_id, render(reply), quote=message)


async def on_group_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """In a group only a mention of the bot or a reply to it is a question; chatter is ignored."""
    message, bot = update.effective_message, context.bot
    assert message is not None
    question = addressed_question(message, bot.id, bot.username)
    if question is None:
        return
    await show_typing(message)
    conversation = chat_key("telegram", message.chat_id)
    reply = await assistant_of(context).ask(user_of(update), question, conversation=conversation)
    await send(context, message.chat_id, render(reply), quote=message)


async def on_more(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The More button: the next passages for the same question, as a new message."""
    query, more = pressed(update)
    await query.answer()
    reply = await assistant_of(context).ask(user_of(update), more.question, offset=more.offset)
    if update.effective_chat is not None:
        await send(context, update.effective_chat.id, render(reply))


async def on_sources(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The Sources button: each cited passage in full, folded in an expandable quote."""
    query, sources = pressed(update)
    await query.answer()
    if update.effective_chat is not None:
        out = Outgoing(pack(format_source(passage) for passage in sources.passages))
        await send(context, update.effective_chat.id, out)


async def on_browse(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """An area button: the area's first page as a new message, or another page in place."""
    query, browse = pressed(update)
    await query.answer()
    out = render(assistant_of(context).browse(browse.slug, browse.page))
    if browse.in_place:
        with unless_unchanged():
            await query.edit_message_text(out.texts[0], reply_markup=out.keyboard)
    elif update.effective_chat is not None:
        await send(context, update.effective_chat.id, out)


async def on_vote(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Helpful / not helpful: recorded for moderators, then the vote buttons disappear."""
    query, vote = pressed(update)
    notice = assistant_of(context).record_feedback(
        user_of(update), vote.question, vote.passage_ids, vote.helpful
    )
    await query.answer(notice.text)
    message = query.message
    if isinstance(message, Message) and message.reply_markup:
        rows = [
            [b for b in row if not isinstance(b.callback_data, Vote)]
            for row in message.reply_markup.inline_keyboard
        ]
        markup = InlineKeyboardMarkup([row for row in rows if row])
        with unless_unchanged():
            await query.edit_message_reply_markup(markup)


async def on_expired_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button whose payload is gone (after a restart or long ago): say so."""
    query, _ = pressed(update)
    await query.answer(EXPIRED, show_alert=True)


async def on_inline_query(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`@bot question` in any chat: cited passages to share, paged as the user scrolls."""
    query = update.inline_query
    assert query is not None
    if not query.query.strip():
        await query.answer([], cache_time=INLINE_CACHE_SECONDS)
        return
    offset = int(query.offset) if query.offset.isdigit() else 0
    reply = await assistant_of(context).ask(user_of(update), query.query, offset=offset)
    more = isinstance(reply, AnswerReply) and reply.answer.has_more
    next_offset = str(offset + len(reply.answer.hits)) if more else ""  # type: ignore[union-attr]
    await query.answer(
        inline_results(reply), cache_time=INLINE_CACHE_SECONDS, next_offset=next_offset
    )


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log what failed, with context and never the token, and tell the user politely."""
    error = context.error
    if isinstance(error, Forbidden):  # the user blocked the bot or left: nobody to tell
        log.info("Telegram: a chat is no longer reachable: %s", error)
        return
    kind = next((k for k in ALLOWED_UPDATES if getattr(update, k, None)), "unknown")
    update_id = getattr(update, "update_id", "?")
    log.error("Telegram: handling update %s (%s) failed", update_id, kind, exc_info=error)
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    with contextlib.suppress(TelegramError):
        if update.callback_query:
            await update.callback_query.answer()
        await context.bot.send_message(update.effective_chat.id, escape(SORRY))


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


def build_application(assistant: Assistant, settings: Settings) -> Application:
    """The Application with every handler registered, talking to `settings.telegram_api_url`."""
    if settings.telegram_token is None:
        raise ValueError("IPBOT_TELEGRAM_TOKEN is not set")
    for noisy in ("httpx", "httpcore"):  # they log request URLs, and the URL holds the token
        logging.getLogger(noisy).setLevel(logging.WARNING)
    defaults = Defaults(
        parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True)
    )
    application = (
        Application.builder()
        .token(settings.telegram_token.get_secret_value())
        .base_url(settings.telegram_api_url)
        .base_file_url(file_url_for(settings.telegram_api_url))
        .arbitrary_callback_data(True)
        .defaults(defaults)
        .rate_limiter(RetryAfterLimiter())
        .concurrent_updates(True)
        .build()
    )
    application.bot_data["assistant"] = assistant
    new = filters.UpdateType.MESSAGE
    ours = [c.name for c in COMMANDS] + ["start"]
    application.add_handlers(
        [
            CommandHandler(ours, on_command, filters=new),
            MessageHandler(new & filters.COMMAND & filters.ChatType.PRIVATE, on_command),
            MessageHandler(new & ~filters.COMMAND & filters.ChatType.PRIVATE, on_private_text),
            MessageHandler(
                new & filters.TEXT & ~filters.COMMAND & filters.ChatType.GROUPS, on_group_text
            ),
            CallbackQueryHandler(on_more, pattern=MorePassages),
            CallbackQueryHandler(on_sources, pattern=ShowSources),
            CallbackQueryHandler(on_browse, pattern=BrowseArea),
            CallbackQueryHandler(on_vote, pattern=Vote),
            CallbackQueryHandler(on_expired_button, pattern=InvalidCallbackData),
            InlineQueryHandler(on_inline_query),
        ]
    )
    application.add_error_handler(on_error)
    return application


def log_polling_error(exc: TelegramError) -> None:
    log.warning("Telegram: polling failed (%s); retrying", exc)


@contextlib.asynccontextmanager
async def polling(application: Application) -> AsyncIterator[Application]:
    """Initialise, register the command menu and poll; on exit confirm updates and stop."""
    async with application:
        commands = [BotCommand(c.name, c.description) for c in COMMANDS]
        await application.bot.set_my_commands(commands)
        await application.updater.start_polling(  # type: ignore[union-attr]
            allowed_updates=ALLOWED_UPDATES, error_callback=log_polling_error
        )
        await application.start()
        try:
            yield application
        finally:
            await application.updater.stop()  # type: ignore[union-attr]
            await application.stop()


class RedactSecret(logging.Filter):
    """Replaces a secret in every record (message and traceback) before a handler writes it."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, "<token>"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.secret in record.exc_text:
            record.exc_text = record.exc_text.replace(self.secret, "<token>")
        return True


@contextlib.contextmanager
def redacted_logs(secret: str) -> Iterator[None]:
    handlers = list(logging.getLogger().handlers)
    redact = RedactSecret(secret)
    for handler in handlers:
        handler.addFilter(redact)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redact)


async def run_telegram(assistant: Assistant, settings: Settings, stop: asyncio.Event) -> None:
    """Answer on Telegram until `stop` is set (what `ipbot run` calls)."""
    token = settings.telegram_token.get_secret_value()  # type: ignore[union-attr]
    with redacted_logs(token):  # the library logs its URLs, token included, at DEBUG level
        try:
            await serve_until_stopped(assistant, settings, stop)
        except InvalidToken:  # its message contains the token
            raise RuntimeError("Telegram rejected IPBOT_TELEGRAM_TOKEN; check the token") from None
    log.info("Telegram: stopped")


async def serve_until_stopped(
    assistant: Assistant, settings: Settings, stop: asyncio.Event
) -> None:
    """Start, retrying while Telegram is unreachable (the library retries once running)."""
    wait = START_RETRY_FIRST
    while not stop.is_set():
        try:
            async with polling(build_application(assistant, settings)) as application:
                log.info("Telegram: answering as @%s", application.bot.username)
                await stop.wait()
                return
        except NetworkError as exc:  # includes timeouts and 5xx answers, not a bad token
            log.warning("Telegram: cannot start (%s); retrying in %.0f s", exc, wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        wait = min(wait * 2, START_RETRY_MAX)
