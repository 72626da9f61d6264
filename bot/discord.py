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

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import metrics
from bot.assistant import EXPIRED, Assistant
from bot.commands import COMMANDS
from bot.conversation import chat_key
from bot.discord_format import (
    CHOICE_MAX,
    CHOICES_MAX,
    CONTENT_MAX,
    NO_MENTIONS,
    escape,
    new_embed,
    outbound_embed,
    reply_embed,
    shorten,
    thread_name,
)
from bot.replies import (
    SORRY,
    AnnouncePreview,
    AnswerReply,
    AreaPage,
    Chat,
    Context,
    Notice,
    Quiet,
    RefreshReply,
    Reply,
    SuggestionQueue,
    User,
)
from bot.sender import DeliveryResult, Outbound, Outcome, Target
from bot.settings import Settings, SettingsError

log = logging.getLogger(__name__)

BUTTON_TIMEOUT = 3600.0
BUTTON_LABEL_MAX = 80  # Discord's limit
MAX_OFFER_BUTTONS = 5  # one row of buttons
DESCRIPTIONS = {c.name: c.description[:100] for c in COMMANDS}
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


def discord_user(user: discord.abc.User, locale: discord.Locale | None = None) -> User:
    """The user as the assistant knows them; an interaction's `locale` (the language of the
    user's Discord client) is a hint to the language of their question, like Telegram's."""
    return User("discord", str(user.id), locale.value if locale else None)


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


def outgoing(reply: Reply) -> Outgoing | None:
    """A reply as a Discord message, with the buttons that belong under it; None: send nothing."""
    if isinstance(reply, Quiet):
        return None
    embed = reply_embed(reply)
    if embed is None:
        assert isinstance(reply, Notice)
        text = escape(reply.text)
        if len(text) > CONTENT_MAX:  # /gaps, /stats: an embed holds twice a message's text
            return Outgoing(embeds=[new_embed("ipbot", text)], ephemeral=True)
        return Outgoing(content=text, ephemeral=True)
    return Outgoing(embeds=[embed], view=buttons_for(reply))


async def respond(interaction: discord.Interaction, out: Outgoing | None) -> None:
    """The interaction's response, or a follow-up when it was already deferred.

    With nothing to send (a user over the rate limit, already told) only a pending public
    "thinking..." is removed.
    """
    if interaction.response.is_done():
        thinking = (
            interaction.response.type == discord.InteractionResponseType.deferred_channel_message
        )
        if out is None:
            if thinking:
                await interaction.delete_original_response()
            return
        if thinking and out.ephemeral:
            # the first follow-up replaces the public "thinking..." and stays public whatever
            # its flags: remove it, so a notice meant for the asker alone really is
            await interaction.delete_original_response()
        await interaction.followup.send(**out.kwargs(), ephemeral=out.ephemeral, wait=True)
    elif out is None:
        await interaction.response.defer()  # acknowledged, nothing shown
    else:
        await interaction.response.send_message(**out.kwargs(), ephemeral=out.ephemeral)


async def report_error(interaction: discord.Interaction, error: Exception, what: str) -> None:
    """Log a failure (never the token) and tell only the asker, politely."""
    log.error("Discord %s failed: %r", what, error, exc_info=error)
    with contextlib.suppress(discord.HTTPException):
        await respond(interaction, Outgoing(content=SORRY, ephemeral=True))


# -- buttons ----------------------------------------------------------------------------
# Each button's custom_id carries its own data (`more:<question id>:<offset>`), looked up in
# the store when pressed: buttons keep working after a restart and on any replica.

LEGACY_IDS = ("ipbot:more", "ipbot:helpful", "ipbot:not-helpful", "ipbot:previous", "ipbot:next")


def assistant_of(interaction: discord.Interaction) -> Assistant:
    return interaction.client.assistant  # type: ignore[attr-defined]


class ReplyButton(discord.ui.DynamicItem[discord.ui.Button], template=r"^$"):
    """A button whose failure gets an apology to the presser, not silence."""

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await self.pressed(interaction)
        except Exception as exc:
            await report_error(interaction, exc, f"button {self.custom_id}")

    async def pressed(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError


class MoreButton(ReplyButton, template=r"^more:(?P<qid>\d{1,18}):(?P<offset>\d{1,4})$"):
    def __init__(self, question_id: int, offset: int):
        custom_id = f"more:{question_id}:{offset}"
        style = discord.ButtonStyle.primary
        super().__init__(discord.ui.Button(label="More", style=style, custom_id=custom_id))
        self.question_id, self.offset = question_id, offset

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # type: ignore[no-untyped-def, override]
        return cls(int(match["qid"]), int(match["offset"]))

    async def pressed(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)  # answered within 3 s; search follows
        assistant = assistant_of(interaction)
        reply = await assistant.more(discord_user(interaction.user), self.question_id, self.offset)
        await respond(interaction, outgoing(reply))


class VoteButton(ReplyButton, template=r"^fb:(?P<qid>\d{1,18}):(?P<sign>[+-])$"):
    def __init__(self, question_id: int, helpful: bool):
        label, emoji = ("Helpful", "👍") if helpful else ("Not helpful", "👎")
        custom_id = f"fb:{question_id}:{'+' if helpful else '-'}"
        super().__init__(discord.ui.Button(label=label, emoji=emoji, custom_id=custom_id))
        self.question_id, self.helpful = question_id, helpful

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # type: ignore[no-untyped-def, override]
        return cls(int(match["qid"]), match["sign"] == "+")

    async def pressed(self, interaction: discord.Interaction) -> None:
        user = discord_user(interaction.user)
        notice = await assistant_of(interaction).vote(user, self.question_id, self.helpful)
        await respond(interaction, Outgoing(notice.text, ephemeral=True))


class PageButton(ReplyButton, template=r"^area:(?P<slug>[a-z-]{1,40}):(?P<page>\d{1,3})$"):
    def __init__(self, slug: str, page: int, label: str = "Next", disabled: bool = False):
        custom_id = f"area:{slug}:{page}"
        button: discord.ui.Button = discord.ui.Button(
            label=label, custom_id=custom_id, disabled=disabled
        )
        super().__init__(button)
        self.slug, self.page = slug, page

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # type: ignore[no-untyped-def, override]
        return cls(match["slug"], int(match["page"]))

    async def pressed(self, interaction: discord.Interaction) -> None:
        reply = assistant_of(interaction).browse(self.slug, self.page)
        if isinstance(reply, Notice):
            await respond(interaction, outgoing(reply))
            return
        embed = reply_embed(reply)
        await interaction.response.edit_message(
            embeds=[embed] if embed else [], view=buttons_for(reply), allowed_mentions=NO_MENTIONS
        )


class AnnounceButton(ReplyButton, template=r"^ann:(?P<token>[0-9a-f]{12}):(?P<choice>[yn])$"):
    def __init__(self, token: str, confirm: bool, label: str | None = None):
        label, style = (
            (label or "Confirm", discord.ButtonStyle.success)
            if confirm
            else ("Cancel", discord.ButtonStyle.secondary)
        )
        custom_id = f"ann:{token}:{'y' if confirm else 'n'}"
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=custom_id))
        self.token, self.confirm = token, confirm

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # type: ignore[no-untyped-def, override]
        return cls(match["token"], match["choice"] == "y")

    async def pressed(self, interaction: discord.Interaction) -> None:
        context = interaction_context(interaction)
        notice = await assistant_of(interaction).announce_choice(context, self.token, self.confirm)
        if notice.kind == "refused":  # someone else in the channel: only they see it
            await respond(interaction, Outgoing(escape(notice.text), ephemeral=True))
            return
        await interaction.response.edit_message(view=None)
        if notice.kind == "cancelled":
            return
        await interaction.followup.send(
            escape(notice.text), allowed_mentions=NO_MENTIONS, ephemeral=False
        )


class CoverButton(ReplyButton, template=r"^cov:(?P<qid>\d{1,18})$"):
    """ "Tell me when this is covered" under an abstention: opt-in, answered to the presser only."""

    def __init__(self, question_id: int):
        custom_id = f"cov:{question_id}"
        label = "Tell me when this is covered"
        super().__init__(discord.ui.Button(label=label, emoji="🔔", custom_id=custom_id))
        self.question_id = question_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # type: ignore[no-untyped-def, override]
        return cls(int(match["qid"]))

    async def pressed(self, interaction: discord.Interaction) -> None:
        user = discord_user(interaction.user)
        notice = await assistant_of(interaction).follow(user, self.question_id)
        await respond(interaction, Outgoing(notice.text, ephemeral=True))


class DecideButton(ReplyButton, template=r"^sg:(?P<sid>\d{1,18}):(?P<choice>[ar])$"):
    """Accept or Reject under /queue; the assistant checks the presser is a moderator."""

    def __init__(self, suggestion_id: int, accept: bool):
        label = f"{'Accept' if accept else 'Reject'} #{suggestion_id}"
        style = discord.ButtonStyle.success if accept else discord.ButtonStyle.secondary
        custom_id = f"sg:{suggestion_id}:{'a' if accept else 'r'}"
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=custom_id))
        self.suggestion_id, self.accept = suggestion_id, accept

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # type: ignore[no-untyped-def, override]
        return cls(int(match["sid"]), match["choice"] == "a")

    async def pressed(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # a draft is written
        context = interaction_context(interaction)
        notice = await assistant_of(interaction).decide(context, self.suggestion_id, self.accept)
        await respond(interaction, Outgoing(escape(notice.text), ephemeral=True))


class ExpiredButton(discord.ui.Button):
    async def callback(self, interaction: discord.Interaction) -> None:
        await respond(interaction, Outgoing(EXPIRED, ephemeral=True))


class ExpiredButtons(discord.ui.View):
    """Catches clicks on buttons of an older version, whose data is not in their id."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        for custom_id in LEGACY_IDS:
            self.add_item(ExpiredButton(label=custom_id, custom_id=custom_id))


def buttons_for(reply: Reply) -> discord.ui.View | None:
    """The buttons under a reply, each carrying its own data."""
    view = discord.ui.View(timeout=None)
    match reply:
        case AnswerReply(answer=answer, question_id=int() as qid) if answer.answered:
            if answer.has_more:
                view.add_item(MoreButton(qid, answer.offset + len(answer.hits)))
            view.add_item(VoteButton(qid, helpful=True))
            view.add_item(VoteButton(qid, helpful=False))
        case AreaPage(area=area, page=page, pages=pages) if pages > 1:
            view.add_item(PageButton(area.slug, max(0, page - 1), "Previous", page == 0))
            view.add_item(
                PageButton(area.slug, min(pages - 1, page + 1), "Next", page + 1 >= pages)
            )
        case AnswerReply(answer=answer, question_id=int() as qid) if answer.offset == 0:
            view.add_item(CoverButton(qid))
        case AnnouncePreview(token=token):
            view.add_item(AnnounceButton(token, confirm=True))
            view.add_item(AnnounceButton(token, confirm=False))
        case RefreshReply(offers=offers):
            for title, token in offers[:MAX_OFFER_BUTTONS]:
                label = shorten(f"Publish: {title}", BUTTON_LABEL_MAX)
                view.add_item(AnnounceButton(token, confirm=True, label=label))
        case SuggestionQueue(items=items):
            for item in items[:10]:  # five rows of two buttons at most
                view.add_item(DecideButton(item.id, accept=True))
                view.add_item(DecideButton(item.id, accept=False))
    return view if view.children else None


def interaction_context(interaction: discord.Interaction) -> Context:
    """Who pressed or typed where; Manage Channels makes someone a channel's administrator."""
    user = discord_user(interaction.user)
    if interaction.guild is None:
        return Context(user, Chat("discord", user.id, "dm"))
    allowed = interaction.permissions.manage_channels

    async def is_admin() -> bool:
        return allowed

    chat = Chat("discord", str(interaction.channel_id), "group")
    return Context(user, chat, is_admin, role_ids(interaction.user))


def role_ids(member: discord.abc.User) -> frozenset[str]:
    """A server member's role ids (moderators may be named by role); none in DMs."""
    return frozenset(str(role.id) for role in getattr(member, "roles", ()))


# -- slash commands ---------------------------------------------------------------------


DM_OPENED = "I have sent you a direct message: answer there to make your suggestion."
DM_CLOSED = (
    "I could not send you a direct message. Allow direct messages from this server's members "
    "(Privacy settings), or send /suggest to me directly."
)


class IpbotCommands(commands.Cog):
    """The slash commands; names and descriptions come from the command registry."""

    def __init__(self, assistant: Assistant):
        self.assistant = assistant

    async def run(
        self, interaction: discord.Interaction, line: str, context: Context | None = None
    ) -> None:
        """Every command goes through the assistant's one dispatch (and its one permission check)."""
        reply = await self.assistant.handle(context or interaction_context(interaction), line)
        await respond(interaction, outgoing(reply))

    @app_commands.command(name="ask", description=DESCRIPTIONS["ask"])
    @app_commands.describe(question="Your question, in plain words", area="Limit to one area")
    async def ask(
        self,
        interaction: discord.Interaction,
        question: app_commands.Range[str, 1, 2000],
        area: str | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)  # searching may take over 3 s
        conversation = interaction_context(interaction).conversation
        user = discord_user(interaction.user, interaction.locale)
        reply = await self.assistant.ask(user, question, area, conversation=conversation)
        await respond(interaction, outgoing(reply))

    @app_commands.command(name="areas", description=DESCRIPTIONS["areas"])
    async def areas(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, "/areas")

    @app_commands.command(name="area", description=DESCRIPTIONS["area"])
    @app_commands.describe(name="The area's name")
    async def area(self, interaction: discord.Interaction, name: str) -> None:
        await self.run(interaction, f"/area {name}")

    @app_commands.command(name="subscribe", description=DESCRIPTIONS["subscribe"])
    @app_commands.describe(
        areas="Areas, separated by commas (empty: all areas)",
        weekly="One digest a week instead of each update as it comes",
        dm="To your direct messages instead of this channel",
    )
    async def subscribe(
        self,
        interaction: discord.Interaction,
        areas: str | None = None,
        weekly: bool = False,
        dm: bool = False,
    ) -> None:
        user = discord_user(interaction.user)
        context = Context.private(user) if dm else interaction_context(interaction)
        if dm:  # Discord quarantines bots that open many DMs: only on this explicit request
            context = Context(user, Chat("discord", user.id, "dm"))
        line = f"/subscribe {areas or ''} {'weekly' if weekly else 'immediately'}"
        await self.run(interaction, line, context)

    @app_commands.command(name="unsubscribe", description=DESCRIPTIONS["unsubscribe"])
    @app_commands.describe(
        areas="Areas, separated by commas (empty: everything)", dm="Your direct messages"
    )
    async def unsubscribe(
        self, interaction: discord.Interaction, areas: str | None = None, dm: bool = False
    ) -> None:
        user = discord_user(interaction.user)
        context = Context(user, Chat("discord", user.id, "dm")) if dm else None
        await self.run(interaction, f"/unsubscribe {areas or ''}", context)

    @app_commands.command(name="subscriptions", description=DESCRIPTIONS["subscriptions"])
    async def subscriptions(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, "/subscriptions")

    @app_commands.command(name="updates", description=DESCRIPTIONS["updates"])
    @app_commands.describe(area="Only this area")
    async def updates(self, interaction: discord.Interaction, area: str | None = None) -> None:
        await self.run(interaction, f"/updates {area or ''}")

    @app_commands.command(name="forget", description=DESCRIPTIONS["forget"])
    async def forget(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, "/forget")

    @app_commands.command(name="help", description=DESCRIPTIONS["help"])
    async def help_(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, "/help")

    @app_commands.command(name="about", description=DESCRIPTIONS["about"])
    async def about(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, "/about")

    @app_commands.command(name="announce", description=DESCRIPTIONS["announce"])
    @app_commands.describe(update="The update's file name under corpus/updates/")
    @app_commands.default_permissions(manage_guild=True)
    async def announce(self, interaction: discord.Interaction, update: str) -> None:
        await self.run(interaction, f"/announce {update}")

    @app_commands.command(name="stats", description=DESCRIPTIONS["stats"])
    @app_commands.describe(days="How many days back (default 30)")
    @app_commands.default_permissions(manage_guild=True)
    async def stats(self, interaction: discord.Interaction, days: int = 30) -> None:
        await self.run(interaction, f"/stats {days}")

    @app_commands.command(name="gaps", description=DESCRIPTIONS["gaps"])
    @app_commands.describe(days="How many days back (default 30)")
    @app_commands.default_permissions(manage_guild=True)
    async def gaps(self, interaction: discord.Interaction, days: int = 30) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # grouping takes a moment
        await self.run(interaction, f"/gaps {days}")

    @app_commands.command(name="reload", description=DESCRIPTIONS["reload"])
    @app_commands.default_permissions(manage_guild=True)
    async def reload(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)  # a rebuild takes seconds to minutes
        await self.run(interaction, "/reload")

    @app_commands.command(name="versions", description=DESCRIPTIONS["versions"])
    @app_commands.default_permissions(manage_guild=True)
    async def versions(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, "/versions")

    @app_commands.command(name="promote", description=DESCRIPTIONS["promote"])
    @app_commands.describe(version="The version's number in /versions")
    @app_commands.default_permissions(manage_guild=True)
    async def promote(self, interaction: discord.Interaction, version: int) -> None:
        await interaction.response.defer(thinking=True)
        await self.run(interaction, f"/promote {version}")

    @app_commands.command(name="rollback", description=DESCRIPTIONS["rollback"])
    @app_commands.default_permissions(manage_guild=True)
    async def rollback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await self.run(interaction, "/rollback")

    @app_commands.command(name="suggest", description=DESCRIPTIONS["suggest"])
    async def suggest(self, interaction: discord.Interaction) -> None:
        """In a server the exchange moves to a direct message (it is between the person and
        the moderators), opened on this explicit request; in a DM it starts where it is."""
        if interaction.guild is None:
            await self.run(interaction, "/suggest")
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = discord_user(interaction.user)
        private = Context(user, Chat("discord", user.id, "dm"))
        out = outgoing(await self.assistant.handle(private, "/suggest"))
        try:
            channel = await interaction.user.create_dm()
            if out is not None:
                await channel.send(**out.kwargs())
        except discord.HTTPException as exc:
            log.info("Discord: cannot open a DM for /suggest: %s", exc)
            await self.assistant.handle(private, "/cancel")
            await interaction.followup.send(DM_CLOSED, ephemeral=True)
            return
        await interaction.followup.send(DM_OPENED, ephemeral=True)

    @app_commands.command(name="cancel", description=DESCRIPTIONS["cancel"])
    async def cancel(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, "/cancel")

    @app_commands.command(name="queue", description=DESCRIPTIONS["queue"])
    @app_commands.default_permissions(manage_guild=True)
    async def queue(self, interaction: discord.Interaction) -> None:
        """Shown to the moderator alone: the queue is not for the whole channel to read."""
        reply = await self.assistant.handle(interaction_context(interaction), "/queue")
        out = outgoing(reply)
        if out is not None:
            out.ephemeral = True
        await respond(interaction, out)

    @subscribe.autocomplete("areas")
    @unsubscribe.autocomplete("areas")
    async def complete_areas(
        self, _: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Several areas, comma-separated: complete the one being typed, keep the others."""
        chosen, _comma, typing = current.rpartition(",")
        prefix = f"{chosen.strip()}, " if chosen.strip() else ""
        return [
            app_commands.Choice(
                name=shorten(prefix + c.name, CHOICE_MAX), value=(prefix + c.value)[:CHOICE_MAX]
            )
            for c in area_choices(self.assistant, typing)
        ]

    @ask.autocomplete("area")
    @area.autocomplete("name")
    @updates.autocomplete("area")
    async def complete_area(
        self, _: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return area_choices(self.assistant, current)


# -- the client -------------------------------------------------------------------------


class IpBot(commands.Bot):
    """Slash commands, plus questions by mention, by DM and inside threads the bot started."""

    def __init__(self, assistant: Assistant, settings: Settings, intents: discord.Intents):
        sharding: dict[str, Any] = (
            {"shard_count": settings.discord_shards} if settings.discord_shards else {}
        )
        super().__init__(
            command_prefix=commands.when_mentioned,  # unused: no text commands
            help_command=None,
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            guild_ready_timeout=GUILD_READY_TIMEOUT,
            **sharding,
        )
        self.assistant, self.settings = assistant, settings

    async def setup_hook(self) -> None:
        await self.add_cog(IpbotCommands(self.assistant))
        self.add_dynamic_items(
            MoreButton, VoteButton, PageButton, AnnounceButton, CoverButton, DecideButton
        )
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
        own_roles = {
            r.id for r in message.role_mentions if r.tags and r.tags.bot_id == self.user.id
        }
        mentioned = bool(own_roles) or any(user.id == self.user.id for user in message.mentions)
        # without the message content intent, unaddressed thread messages arrive empty; one
        # that mentions someone else is people talking in the bot's thread, not to the bot
        to_others = any(user.id != self.user.id for user in message.mentions)
        follow_up = (
            (in_own_thread or self.replies_to_me(message))
            and bool(message.content.strip())
            and not to_others
        )
        if message.guild is not None and not (mentioned or follow_up):
            return None
        text = re.sub(rf"<@!?{self.user.id}>", " ", message.content)
        for role in own_roles:  # the bot's own role, which Discord's picker offers beside it
            text = text.replace(f"<@&{role}>", " ")
        return text.strip()

    def replies_to_me(self, message: discord.Message) -> bool:
        """A reply to one of the bot's messages, with the ping turned off (Discord's reply
        button offers that): as much addressed to the bot as a mention."""
        reference = message.reference
        replied = reference.resolved if reference is not None else None
        return isinstance(replied, discord.Message) and replied.author.id == self.user.id  # type: ignore[union-attr]

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.is_system():  # a pin, a member joining...
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
        async def typing() -> None:
            with contextlib.suppress(discord.HTTPException):  # not worth losing the answer
                await message.channel.typing()

        reply = await self.assistant.handle(self.message_context(message), question, typing)
        out = outgoing(reply)
        if out is None:
            return
        # a rate-limit notice goes where an answer would, never as a stream in the channel
        in_thread = isinstance(reply, AnswerReply) or (
            isinstance(reply, Notice) and reply.kind == "rate_limited"
        )
        if in_thread and self.may_start_thread(message):
            try:
                thread = await message.create_thread(name=thread_name(question))
            except discord.HTTPException as exc:
                log.warning("Discord: could not start a thread: %s", exc)
            else:
                # Follow-ups are typed in the thread: it continues the channel's conversation.
                if isinstance(reply, AnswerReply):
                    thread_key = chat_key("discord", thread.id, message.author.id)
                    self.assistant.conversations.remember(thread_key, reply.answer.question)
                await thread.send(**out.kwargs())
                return
        await message.reply(**out.kwargs(), mention_author=False)

    def message_context(self, message: discord.Message) -> Context:
        user = discord_user(message.author)
        if message.guild is None:
            return Context(user, Chat("discord", user.id, "dm"))
        member = message.author
        allowed = (
            isinstance(member, discord.Member)
            and message.channel.permissions_for(member).manage_channels
        )

        async def is_admin() -> bool:
            return allowed

        chat = Chat("discord", str(message.channel.id), "group")
        return Context(user, chat, is_admin, role_ids(message.author))

    def may_start_thread(self, message: discord.Message) -> bool:
        channel = message.channel
        if not self.settings.discord_threads or not isinstance(channel, discord.TextChannel):
            return False
        me = channel.guild.me
        allowed = channel.permissions_for(me) if me else discord.Permissions.none()
        return allowed.create_public_threads and allowed.send_messages_in_threads


# -- running ----------------------------------------------------------------------------


class ShardedIpBot(IpBot, commands.AutoShardedBot):
    """IpBot over IPBOT_DISCORD_SHARDS gateway shards, all in this process (for very large
    bots; Discord requires sharding from 2,500 servers). Replicas still run one gateway."""


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
        bot_class = ShardedIpBot if settings.discord_shards else IpBot
        async with bot_class(assistant, settings, intents) as bot:
            await serve_until(bot, token, stop)
    except discord.LoginFailure:
        raise SettingsError("Discord rejected IPBOT_DISCORD_TOKEN") from None
    except discord.PrivilegedIntentsRequired:
        raise SettingsError("Discord refused the intents asked for IPBOT_DISCORD_TOKEN") from None


async def watch_gateway(bot: discord.Client, every: float = 10.0) -> None:
    """While the gateway connection is up (heartbeats answered), that is contact for /readyz."""
    while True:
        ws = bot.ws
        if bot.is_ready() and not bot.is_closed() and ws is not None and ws.open:
            metrics.LIVENESS.seen("discord")
        await asyncio.sleep(every)


async def serve_until(bot: discord.Client, token: str, stop: asyncio.Event) -> None:
    """Run the client until `stop` is set; failures of its own (a bad token) propagate."""
    runner = asyncio.create_task(bot.start(token), name="discord-client")
    stopper = asyncio.create_task(stop.wait())
    watcher = asyncio.create_task(watch_gateway(bot), name="discord-watch")
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    watcher.cancel()
    if runner.done():
        runner.result()
        return
    await let_ready_finish(bot)
    await bot.close()
    try:
        await runner
    except Exception as exc:  # stopped while still logging in
        log.debug("Discord: client stopped during start-up: %r", exc)


# -- sending first: broadcasts through the outbox (bot/sender.py) -------------------------


class DiscordOutlet:
    """Discord's sending side for broadcasts: REST only, its own client, no gateway.

    Every send carries the outbox row's nonce with `enforce_nonce` (discord.py sets it with
    any nonce), so a resend after a crash returns the first message instead of a second one.
    """

    platform = "discord"
    resends_safely = True

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = discord.Client(intents=discord.Intents.none())
        self._dm_channels: dict[str, int] = {}

    async def start(self) -> None:
        point_library_at(self.settings)
        token = self.settings.discord_token.get_secret_value()  # type: ignore[union-attr]
        await self.client.login(token)

    async def close(self) -> None:
        await self.client.close()

    async def _channel_id(self, target: Target) -> int:
        """A DM subscription names the user; its channel is opened once, on first send."""
        if target.kind != "dm":
            return int(target.chat_id)
        if target.chat_id not in self._dm_channels:
            data = await self.client.http.start_private_message(int(target.chat_id))
            self._dm_channels[target.chat_id] = int(data["id"])
        return self._dm_channels[target.chat_id]

    async def send(
        self, target: Target, message: Outbound, nonce: str | None = None
    ) -> DeliveryResult:
        try:
            channel = self.client.get_partial_messageable(await self._channel_id(target))
            embed = outbound_embed(message)
            if nonce:
                sent = await channel.send(embed=embed, allowed_mentions=NO_MENTIONS, nonce=nonce)
            else:
                sent = await channel.send(embed=embed, allowed_mentions=NO_MENTIONS)
            if target.kind == "announcement":  # followers' servers get it too
                with contextlib.suppress(discord.HTTPException):
                    await sent.publish()
        except discord.HTTPException as exc:
            return outcome_of(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return DeliveryResult(Outcome.RETRY, detail=type(exc).__name__)
        return DeliveryResult(Outcome.DELIVERED, message_id=str(sent.id))

    async def edit(self, target: Target, message_id: str, message: Outbound) -> DeliveryResult:
        try:
            channel = self.client.get_partial_messageable(await self._channel_id(target))
            await channel.get_partial_message(int(message_id)).edit(embed=outbound_embed(message))
        except discord.HTTPException as exc:
            return outcome_of(exc)
        return DeliveryResult(Outcome.DELIVERED, message_id=message_id)


def outcome_of(exc: discord.HTTPException) -> DeliveryResult:
    """Discord's refusal as a delivery outcome (discord.py already waits out rate limits)."""
    if isinstance(exc, discord.Forbidden | discord.NotFound):
        return DeliveryResult(Outcome.BLOCKED, detail=f"{exc.status} {exc.text}")
    if isinstance(exc, discord.DiscordServerError) or exc.status == 429:
        return DeliveryResult(Outcome.RETRY, detail=f"{exc.status}")
    return DeliveryResult(Outcome.FAILED, detail=f"{exc.status} {exc.text}")
