"""The Discord adapter: slash commands, mentions and DMs in, embeds with buttons out.

It only translates: a Discord event becomes an assistant call, and the typed reply becomes
an embed within Discord's limits. No message may ping anyone (`AllowedMentions.none()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.assistant import (
    COMMANDS,
    AnswerReply,
    AreaPage,
    Assistant,
    Notice,
    Reply,
    User,
)
from bot.conversation import chat_key
from bot.discord_format import (
    CHOICE_MAX,
    CHOICES_MAX,
    CONTENT_MAX,
    NO_MENTIONS,
    escape,
    reply_embed,
    shorten,
    thread_name,
)
from bot.settings import Settings, SettingsError
from retrieval.search import Answer

log = logging.getLogger(__name__)

BUTTON_TIMEOUT = 3600.0
SORRY = "Sorry, something went wrong while answering. Please try again in a moment."
EXPIRED = "These buttons have expired. Ask again with /ask."
DESCRIPTIONS = {c.name: c.description for c in COMMANDS}
# on_ready fires this long after the last GUILD_CREATE (discord.py's default is 2 s); we use
# no guild events, so a short wait only makes a quick start-stop cycle clean (see run_discord)
GUILD_READY_TIMEOUT = 0.5


def area_choices(assistant: Assistant, typed: str) -> list[app_commands.Choice[str]]:
    """Areas whose slug or title contains what the user has typed so far (at most 25)."""
    needle = typed.strip().lower()
    return [
        app_commands.Choice(name=shorten(s.area.title, CHOICE_MAX), value=s.area.slug)
        for s in assistant.areas().areas
        if needle in s.area.slug or needle in s.area.title.lower()
    ][:CHOICES_MAX]


def discord_user(user: discord.abc.User) -> User:
    return User("discord", str(user.id))


# -- sending ----------------------------------------------------------------------------


@dataclass
class Outgoing:
    """One message to send: text or an embed, buttons, and whether only the asker sees it."""

    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)
    view: discord.ui.View | None = None
    ephemeral: bool = False

    def kwargs(self) -> dict[str, Any]:
        sent: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
        if self.content is not None:
            sent["content"] = shorten(self.content, CONTENT_MAX)
        if self.embeds:
            sent["embeds"] = self.embeds
        if self.view is not None:
            sent["view"] = self.view
        return sent


def outgoing(reply: Reply, assistant: Assistant, area: str | None = None) -> Outgoing:
    """A reply as a Discord message, with the buttons that belong under it."""
    embed = reply_embed(reply)
    if embed is None:
        assert isinstance(reply, Notice)
        return Outgoing(content=escape(reply.text), ephemeral=True)
    view: discord.ui.View | None = None
    if isinstance(reply, AnswerReply) and reply.answer.answered:
        view = AnswerView(assistant, reply.answer, area)
    elif isinstance(reply, AreaPage) and reply.pages > 1:
        view = AreaPageView(assistant, reply)
    return Outgoing(embeds=[embed], view=view)


async def respond(interaction: discord.Interaction, out: Outgoing) -> None:
    """The interaction's response, or a follow-up when it was already deferred."""
    if interaction.response.is_done():
        thinking = (
            interaction.response.type == discord.InteractionResponseType.deferred_channel_message
        )
        if thinking and out.ephemeral:
            # the first follow-up replaces the public "thinking..." and stays public whatever
            # its flags: remove it, so a notice meant for the asker alone really is
            await interaction.delete_original_response()
        await interaction.followup.send(**out.kwargs(), ephemeral=out.ephemeral, wait=True)
    else:
        await interaction.response.send_message(**out.kwargs(), ephemeral=out.ephemeral)


async def report_error(interaction: discord.Interaction, error: Exception, what: str) -> None:
    """Log a failure (never the token) and tell only the asker, politely."""
    log.error("Discord %s failed: %r", what, error, exc_info=error)
    with contextlib.suppress(discord.HTTPException):
        await respond(interaction, Outgoing(content=SORRY, ephemeral=True))


# -- buttons ----------------------------------------------------------------------------

MORE, HELPFUL, NOT_HELPFUL = "ipbot:more", "ipbot:helpful", "ipbot:not-helpful"
PREVIOUS, NEXT = "ipbot:previous", "ipbot:next"


class ReplyView(discord.ui.View):
    """Buttons under a reply; a failing button gets an apology, not silence."""

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await report_error(interaction, error, f"button {getattr(item, 'custom_id', item)}")


class AnswerView(ReplyView):
    """The More button pages through the same question; the others record feedback."""

    def __init__(self, assistant: Assistant, answer: Answer, area: str | None):
        super().__init__(timeout=BUTTON_TIMEOUT)
        self.assistant, self.answer, self.area = assistant, answer, area
        self.voters: set[int] = set()
        if not answer.has_more:
            self.remove_item(self.more)

    @discord.ui.button(label="More", style=discord.ButtonStyle.primary, custom_id=MORE)
    async def more(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        button.disabled = True  # answered at once (within 3 s); the search follows
        await interaction.response.edit_message(view=self, allowed_mentions=NO_MENTIONS)
        offset = self.answer.offset + len(self.answer.hits)
        reply = await self.assistant.ask(
            discord_user(interaction.user), self.answer.question, self.area, offset=offset
        )
        await respond(interaction, outgoing(reply, self.assistant, self.area))

    @discord.ui.button(label="Helpful", emoji="👍", custom_id=HELPFUL)
    async def helpful(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await self.vote(interaction, helpful=True)

    @discord.ui.button(label="Not helpful", emoji="👎", custom_id=NOT_HELPFUL)
    async def not_helpful(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await self.vote(interaction, helpful=False)

    async def vote(self, interaction: discord.Interaction, helpful: bool) -> None:
        if interaction.user.id in self.voters:
            await respond(interaction, Outgoing("You already rated this answer.", ephemeral=True))
            return
        self.voters.add(interaction.user.id)
        ids = tuple(hit.passage.id for hit in self.answer.hits)
        user = discord_user(interaction.user)
        notice = self.assistant.record_feedback(user, self.answer.question, ids, helpful)
        await respond(interaction, Outgoing(notice.text, ephemeral=True))


class AreaPageView(ReplyView):
    """Previous / next page of an area, edited in place."""

    def __init__(self, assistant: Assistant, page: AreaPage):
        super().__init__(timeout=BUTTON_TIMEOUT)
        self.assistant, self.page = assistant, page
        self.previous.disabled = page.page == 0
        self.next.disabled = page.page + 1 >= page.pages

    @discord.ui.button(label="Previous", custom_id=PREVIOUS)
    async def previous(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await self.turn(interaction, -1)

    @discord.ui.button(label="Next", custom_id=NEXT)
    async def next(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        await self.turn(interaction, +1)

    async def turn(self, interaction: discord.Interaction, step: int) -> None:
        reply = self.assistant.browse(self.page.area.slug, self.page.page + step)
        if isinstance(reply, Notice):
            await respond(interaction, outgoing(reply, self.assistant))
            return
        view = AreaPageView(self.assistant, reply)
        self.stop()
        await interaction.response.edit_message(
            embed=reply_embed(reply), view=view, allowed_mentions=NO_MENTIONS
        )


class ExpiredButton(discord.ui.Button):
    async def callback(self, interaction: discord.Interaction) -> None:
        await respond(interaction, Outgoing(EXPIRED, ephemeral=True))


class ExpiredButtons(ReplyView):
    """Catches clicks on buttons whose answer is no longer remembered (timeout, restart)."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        for custom_id in (MORE, HELPFUL, NOT_HELPFUL, PREVIOUS, NEXT):
            self.add_item(ExpiredButton(label=custom_id, custom_id=custom_id))


# -- slash commands ---------------------------------------------------------------------


class IpbotCommands(commands.Cog):
    """/ask, /areas, /area, /help and /about (subscriptions will join them here)."""

    def __init__(self, assistant: Assistant):
        self.assistant = assistant

    @app_commands.command(name="ask", description=DESCRIPTIONS["ask"])
    @app_commands.describe(question="Your question, in plain words", area="Limit to one area")
    async def ask(
        self,
        interaction: discord.Interaction,
        question: app_commands.Range[str, 1, 2000],
        area: str | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)  # searching may take over 3 s
        conversation = chat_key("discord", interaction.channel_id)
        reply = await self.assistant.ask(
            discord_user(interaction.user), question, area, conversation=conversation
        )
        await respond(interaction, outgoing(reply, self.assistant, area))

    @app_commands.command(name="areas", description=DESCRIPTIONS["areas"])
    async def areas(self, interaction: discord.Interaction) -> None:
        await respond(interaction, outgoing(self.assistant.areas(), self.assistant))

    @app_commands.command(name="area", description=DESCRIPTIONS["area"])
    @app_commands.describe(name="The area's name")
    async def area(self, interaction: discord.Interaction, name: str) -> None:
        await respond(interaction, outgoing(self.assistant.browse(name), self.assistant))

    @app_commands.command(name="help", description=DESCRIPTIONS["help"])
    async def help_(self, interaction: discord.Interaction) -> None:
        await respond(interaction, outgoing(self.assistant.help(), self.assistant))

    @app_commands.command(name="about", description=DESCRIPTIONS["about"])
    async def about(self, interaction: discord.Interaction) -> None:
        await respond(interaction, outgoing(self.assistant.about(), self.assistant))

    @ask.autocomplete("area")
    @area.autocomplete("name")
    async def complete_area(
        self, _: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return area_choices(self.assistant, current)


# -- the client -------------------------------------------------------------------------


class IpBot(commands.Bot):
    """Slash commands, plus questions by mention, by DM and inside threads the bot started."""

    def __init__(self, assistant: Assistant, settings: Settings, intents: discord.Intents):
        super().__init__(
            command_prefix=commands.when_mentioned,  # unused: no text commands
            help_command=None,
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            guild_ready_timeout=GUILD_READY_TIMEOUT,
        )
        self.assistant, self.settings = assistant, settings

    async def setup_hook(self) -> None:
        await self.add_cog(IpbotCommands(self.assistant))
        self.add_view(ExpiredButtons())
        self.tree.error(self.on_app_command_error)
        await self.sync_commands()

    async def sync_commands(self) -> None:
        """Register the slash commands: in one guild (visible at once) or globally."""
        guild_id = self.settings.discord_guild_id
        guild = discord.Object(id=guild_id) if guild_id else None
        if guild:
            self.tree.copy_global_to(guild=guild)
        try:
            synced = await self.tree.sync(guild=guild)
        except discord.HTTPException as exc:  # mentions and DMs still work
            log.warning("Discord: could not sync slash commands: %s", exc)
        else:
            log.info("Discord: %d slash commands synced %s", len(synced), guild_id or "globally")

    async def on_ready(self) -> None:
        log.info("Discord: connected as %s in %d servers", self.user, len(self.guilds))

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        command = interaction.command
        data: dict[str, Any] = dict(interaction.data or {})
        name = command.name if command else data.get("name", "?")
        await report_error(interaction, error, f"/{name}")

    def question_in(self, message: discord.Message) -> str | None:
        """The question a message asks the bot, or None when it is not addressed to it."""
        assert self.user is not None
        channel = message.channel
        in_own_thread = isinstance(channel, discord.Thread) and channel.owner_id == self.user.id
        mentioned = any(user.id == self.user.id for user in message.mentions)
        # without the message content intent, unaddressed thread messages arrive empty
        follow_up = in_own_thread and bool(message.content.strip())
        if message.guild is not None and not (mentioned or follow_up):
            return None
        return re.sub(rf"<@!?{self.user.id}>", " ", message.content).strip()

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        question = self.question_in(message)
        if question is None:
            return  # channel chatter
        try:
            await self.answer_message(message, question)
        except Exception as exc:
            log.error("Discord message in %s failed: %r", message.channel.id, exc, exc_info=exc)
            with contextlib.suppress(discord.HTTPException):
                await message.reply(SORRY, allowed_mentions=NO_MENTIONS)

    async def answer_message(self, message: discord.Message, question: str) -> None:
        async with message.channel.typing():
            reply = await self.assistant.handle_text(
                discord_user(message.author), question, chat_key("discord", message.channel.id)
            )
        out = outgoing(reply, self.assistant)
        if isinstance(reply, AnswerReply) and self.may_start_thread(message):
            try:
                thread = await message.create_thread(name=thread_name(question))
            except discord.HTTPException as exc:
                log.warning("Discord: could not start a thread: %s", exc)
            else:
                # Follow-ups are typed in the thread: it continues the channel's conversation.
                thread_key = chat_key("discord", thread.id)
                self.assistant.conversations.remember(thread_key, reply.answer.question)
                await thread.send(**out.kwargs())
                return
        await message.reply(**out.kwargs(), mention_author=False)

    def may_start_thread(self, message: discord.Message) -> bool:
        channel = message.channel
        if not self.settings.discord_threads or not isinstance(channel, discord.TextChannel):
            return False
        me = channel.guild.me
        allowed = channel.permissions_for(me) if me else discord.Permissions.none()
        return allowed.create_public_threads and allowed.send_messages_in_threads


# -- running ----------------------------------------------------------------------------


def point_library_at(settings: Settings) -> None:
    """Use the configured REST and gateway URLs (Discord's own, or a local fake in tests)."""
    discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


async def choose_intents(token: str) -> discord.Intents:
    """Default intents, plus message content only where the developer portal allows it.

    Mentions and DMs carry their text without it; follow-ups in the bot's threads need it.
    Requesting it unapproved would make Discord close the connection (4014).
    """
    intents = discord.Intents.default()
    probe = discord.Client(intents=intents)
    try:
        await probe.login(token)
        flags = probe.application_flags
        intents.message_content = flags.gateway_message_content or (
            flags.gateway_message_content_limited
        )
    finally:
        await probe.close()
    if not intents.message_content:
        log.info("Discord: message content intent off; follow-ups in threads need a mention")
    return intents


async def let_ready_finish(bot: discord.Client) -> None:
    """Closing while discord.py still waits to fire on_ready leaves a task that fails later."""
    if bot.ws is not None and not bot.is_ready():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(bot.wait_until_ready(), GUILD_READY_TIMEOUT + 1)


async def run_discord(assistant: Assistant, settings: Settings, stop: asyncio.Event) -> None:
    """Serve Discord until `stop` is set; a rejected token is a SettingsError."""
    if settings.discord_token is None:
        raise SettingsError("IPBOT_DISCORD_TOKEN is not set")
    token = settings.discord_token.get_secret_value()
    point_library_at(settings)
    try:
        intents = await choose_intents(token)
        async with IpBot(assistant, settings, intents) as bot:
            await serve_until(bot, token, stop)
    except discord.LoginFailure:
        raise SettingsError("Discord rejected IPBOT_DISCORD_TOKEN") from None
    except discord.PrivilegedIntentsRequired:
        raise SettingsError("Discord refused the intents asked for IPBOT_DISCORD_TOKEN") from None


async def serve_until(bot: discord.Client, token: str, stop: asyncio.Event) -> None:
    """Run the client until `stop` is set; failures of its own (a bad token) propagate."""
    runner = asyncio.create_task(bot.start(token), name="discord-client")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if runner.done():
        runner.result()
        return
    await let_ready_finish(bot)
    await bot.close()
    try:
        await runner
    except Exception as exc:  # stopped while still logging in
        log.debug("Discord: client stopped during start-up: %r", exc)
