"""A fake Discord on 127.0.0.1 that speaks the REST and gateway protocol discord.py expects.

Tests point the real library at it (`discord.http.Route.BASE` and the gateway URL), push
gateway events (slash commands, button clicks, messages) and read back every REST call the
bot made. Payload shapes follow discord.py 2.7's parsers, not Discord's full documentation.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import encodable

DISCORD_EPOCH_MS = 1420070400000
API_PREFIX = "/api/v10"
# VIEW_CHANNEL, SEND_MESSAGES, EMBED_LINKS, READ_MESSAGE_HISTORY, CREATE_PUBLIC_THREADS,
# SEND_MESSAGES_IN_THREADS: what a server typically grants a bot role.
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 16) | (1 << 35) | (1 << 38)
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19
MESSAGE_CONTENT_INTENT = 1 << 15
FLAG_LOADING = 1 << 7
FLAG_EPHEMERAL = 1 << 6


@dataclass
class Call:
    """One REST request the bot made: method, path below /api/v10, query, JSON body, answer."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    response: Any = None

    @property
    def message_id(self) -> int:
        """The id of the message this call created or edited, as the fake answered it."""
        if "resource" in self.response:
            return int(self.response["resource"]["message"]["id"])
        return int(self.response["id"])

    @property
    def message(self) -> dict | None:
        """The message this call creates or edits, wherever the protocol nests it."""
        if not isinstance(self.body, dict):
            return None
        if self.path.endswith("/callback"):
            return self.body.get("data") if self.body.get("type") in (4, 7) else None
        has_message = "content" in self.body or "embeds" in self.body
        return self.body if has_message and "/threads" not in self.path else None


@dataclass
class _Interaction:
    id: int
    token: str
    channel_id: int
    message_id: int | None = None  # the component's message, or the response once sent
    loading: bool = False


@dataclass
class FakeDiscord:
    """One guild with one text channel, a bot application and a researcher who asks."""

    heartbeat_interval_ms: int = 500
    message_content_allowed: bool = True
    reject_token: bool = False
    refuse_threads: bool = False
    echoing_failures: int = 0  # REST calls refused with the Authorization header in the body
    calls: list[Call] = field(default_factory=list)
    messages: dict[int, dict] = field(default_factory=dict)
    identify: dict | None = None

    def __post_init__(self) -> None:
        self._ids = itertools.count()
        self.application_id = self.snowflake()
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.dm_channel_id = self.snowflake()
        self.bot_user = self.user("ipbot", bot=True)
        self.researcher = self.user("researcher")
        self._interactions: dict[str, _Interaction] = {}
        self._sequence = 0
        self._socket: web.WebSocketResponse | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.resumes = 0
        self.member_permissions = MEMBER_PERMISSIONS  # add MANAGE_CHANNELS to make an admin
        self.member_roles: list[str] = []  # role ids the researcher holds in the guild
        self.moderator_role_id = self.snowflake()  # a role the guild has, for moderator tests
        # Broadcast faults and features: DMs closed, 5xx, nonce deduplication, crossposts.
        self.blocked_channels: set[int] = set()
        self.server_errors: set[int] = set()  # the Nth channel message (1-based) answers 500
        self.crossposted: list[int] = []
        self.dm_channels: dict[str, int] = {}
        self._nonces: dict[tuple[int, str], int] = {}
        self._sends = 0
        self.identifies = 0
        self.connections = 0  # gateway connections open now
        self.most_connections = 0  # the most ever open at once
        self.shards: list[list[int]] = []  # the shard of each IDENTIFY that named one

    # -- identities -----------------------------------------------------------------------

    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._ids) % 4096)

    def user(self, name: str, bot: bool = False) -> dict:
        return {
            "id": str(self.snowflake()),
            "username": name,
            "global_name": name,
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
        }

    def _member(self, user: dict) -> dict:
        return {
            "user": user,
            "roles": list(self.member_roles),
            "joined_at": _now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(self.member_permissions),
        }

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Listen on `port` (0: any free one); a test can bring Discord up late on a port."""
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- waiting for the bot ----------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, condition, timeout: float = 20.0) -> Any:
        """Wait until `condition()` returns something truthy, and return it."""

        async def check() -> Any:
            async with self._changed:
                while not (result := condition()):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(check(), timeout)

    async def wait_until_ready(self, timeout: float = 20.0) -> None:
        await self.wait_until(lambda: self._sequence >= 2, timeout)

    def calls_since(self, mark: int, method: str = "", pattern: str = "") -> list[Call]:
        return [
            c
            for c in self.calls[mark:]
            if (not method or c.method == method) and re.fullmatch(pattern or ".*", c.path)
        ]

    async def next_call(self, mark: int, method: str, pattern: str) -> Call:
        """The first call since `mark` (an index into `calls`) matching method and path."""
        return (await self.wait_until(lambda: self.calls_since(mark, method, pattern)))[0]

    # -- events a test pushes -----------------------------------------------------------------

    async def dispatch(self, event: str, data: dict) -> None:
        if self._socket is None:
            raise RuntimeError("the bot is not connected to the fake gateway")
        self._sequence += 1
        await self._socket.send_json({"op": 0, "t": event, "s": self._sequence, "d": data})

    async def malformed_event(self) -> None:
        """A MESSAGE_CREATE without most of its fields, which discord.py cannot parse."""
        assert self._socket is not None
        self._sequence += 1
        frame = {"op": 0, "t": "MESSAGE_CREATE", "s": self._sequence, "d": {"id": "1"}}
        await self._socket.send_json(frame)

    async def reconnect_request(self) -> None:
        """Ask the bot to reconnect (op 7), as Discord does when it moves a session."""
        assert self._socket is not None
        await self._socket.send_json({"op": 7, "d": None})

    async def post_message(
        self,
        content: str,
        *,
        mention: bool = False,
        dm: bool = False,
        channel_id: int = 0,
        author: dict | None = None,
        role_mention: bool = False,
        mentions: tuple[dict, ...] = (),
        kind: int = 0,
        reply_to: dict | None = None,
    ) -> dict:
        """A researcher (or `author`) writes a message in the channel, a thread or a DM;
        `role_mention` addresses the bot's own role, which Discord's picker offers beside it;
        `mentions` are other users named in it; `kind` is Discord's message type (6: a pin);
        `reply_to`, a message it replies to, with the ping off (its author is not mentioned)."""
        author = author or self.researcher
        if mention:
            content = f"<@{self.bot_user['id']}> {content}"
        elif role_mention:
            content = f"<@&{self.guild_id + 1}> {content}"
        elif not dm and not (self.identify or {}).get("intents", 0) & MESSAGE_CONTENT_INTENT:
            content = ""  # as Discord does for a bot without the message content intent
        data = self._message(
            channel_id or (self.dm_channel_id if dm else self.channel_id), author, content
        )
        data["type"] = kind
        if reply_to is not None:  # Discord sends the replied-to message along (type 19)
            data["type"] = 19
            data["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                "guild_id": str(self.guild_id),
            }
            data["referenced_message"] = reply_to
        data["mentions"] = [*([self.bot_user] if mention else []), *mentions]
        data["content"] += "".join(f" <@{user['id']}>" for user in mentions)
        if role_mention:
            data["mention_roles"] = [str(self.guild_id + 1)]
        if not dm:
            data["guild_id"] = str(self.guild_id)
            data["member"] = {k: v for k, v in self._member(author).items() if k != "user"}
        await self.dispatch("MESSAGE_CREATE", data)
        return data

    async def run_command(
        self, name: str, /, *, dm: bool = False, locale: str = "en-GB", **options: str | bool
    ) -> str:
        """A researcher runs a slash command (`locale`: their Discord client's language);
        returns the interaction token."""
        return await self._interaction(2, self._command_data(name, options), dm=dm, locale=locale)

    async def autocomplete(self, name: str, focused: str, /, **options: str) -> str:
        data = self._command_data(name, options)
        for option in data["options"]:
            option["focused"] = option["name"] == focused
        return await self._interaction(4, data)

    async def click(self, message_id: int, custom_id: str) -> str:
        """A researcher presses a button under one of the bot's messages."""
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interaction(3, data, message=self.messages[message_id])

    def _command_data(self, name: str, options: dict[str, str | bool]) -> dict:
        return {
            "id": str(self.snowflake()),
            "name": name,
            "type": 1,
            "guild_id": str(self.guild_id),
            "options": [
                {"name": k, "type": 5 if isinstance(v, bool) else 3, "value": v}
                for k, v in options.items()
            ],
        }

    async def _interaction(self, kind: int, data: dict, dm: bool = False, **extra: Any) -> str:
        token = f"interaction-token-{self.snowflake()}"
        channel_id = int(extra["message"]["channel_id"]) if "message" in extra else self.channel_id
        channel_id = self.dm_channel_id if dm else channel_id
        record = _Interaction(self.snowflake(), token, channel_id)
        if "message" in extra:
            record.message_id = int(extra["message"]["id"])
        self._interactions[token] = record
        payload = {
            "id": str(record.id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel_id),
            "channel": {"id": str(channel_id), "type": 1 if dm else 0},
            "app_permissions": str(MEMBER_PERMISSIONS),
            "entitlements": [],
            "attachment_size_limit": 8 * 1024 * 1024,
            "context": 1 if dm else 0,
            "locale": "en-GB",
            **extra,
        }
        if dm:
            payload["user"] = self.researcher
            data.pop("guild_id", None)
        else:
            payload.update(guild_id=str(self.guild_id), member=self._member(self.researcher))
            payload["guild_locale"] = "en-US"
        await self.dispatch("INTERACTION_CREATE", payload)
        return token

    # -- gateway --------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        self.connections += 1
        self.most_connections = max(self.most_connections, self.connections)
        try:
            await socket.send_json(
                {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
            )
            async for frame in socket:
                if frame.type is not WSMsgType.TEXT:
                    break
                await self._on_gateway_frame(json.loads(frame.data))
        finally:
            self.connections -= 1
            if self._socket is socket:
                self._socket = None
            await self._notify()
        return socket

    async def _on_gateway_frame(self, frame: dict) -> None:
        op = frame.get("op")
        if op == 1:  # heartbeat
            assert self._socket is not None
            await self._socket.send_json({"op": 11})
        elif op == 2:  # identify
            self.identify = frame["d"]
            self.identifies += 1
            if "shard" in frame["d"]:
                self.shards.append(list(frame["d"]["shard"]))
            await self.dispatch("READY", self._ready())
            await self.dispatch("GUILD_CREATE", self._guild())
        elif op == 6:  # resume
            self.resumes += 1
            await self.dispatch("RESUMED", {})
        await self._notify()

    def _ready(self) -> dict:
        return {
            "v": 10,
            "user": self.bot_user,
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            **({"shard": self.identify["shard"]} if "shard" in self.identify else {}),
        }

    def _guild(self) -> dict:
        return {
            "id": str(self.guild_id),
            "name": "Research office",
            "owner_id": self.researcher["id"],
            "unavailable": False,
            "member_count": 2,
            "roles": [
                {"id": str(self.guild_id), "name": "@everyone", "permissions": "0", "position": 0},
                {
                    "id": str(self.guild_id + 1),
                    "name": "ipbot",
                    "permissions": str(MEMBER_PERMISSIONS),
                    "position": 1,
                    "managed": True,
                    "tags": {"bot_id": self.bot_user["id"]},  # the role Discord made for the bot
                },
                {
                    "id": str(self.moderator_role_id),
                    "name": "moderators",
                    "permissions": "0",
                    "position": 2,
                },
            ],
            "members": [{**self._member(self.bot_user), "roles": [str(self.guild_id + 1)]}],
            "channels": [
                {"id": str(self.channel_id), "type": 0, "name": "ip-questions", "position": 0}
            ],
            "threads": [],
        }

    def _application_flags(self) -> int:
        return GATEWAY_MESSAGE_CONTENT_LIMITED if self.message_content_allowed else 0

    # -- REST -----------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = await _read_body(request)
        call = Call(request.method, path, dict(request.query), body)
        self.calls.append(call)
        try:
            if self.echoing_failures > 0:  # as a misconfigured proxy's error page does
                self.echoing_failures -= 1
                echoed = "".join(f"&#{ord(c)};" for c in request.headers.get("Authorization", ""))
                result = _error(400, f"Bad request from {echoed}", 0)
            elif not encodable(body):
                result = _error(400, "Invalid Form Body: text must be valid UTF-8", 50035)
            else:
                result = call.response = await self._route(request.method, path, body)
        finally:
            await self._notify()
        if result is None:
            return web.Response(status=204)
        if isinstance(result, web.Response):
            call.response = None
            return result
        return _json(result)

    async def _route(self, method: str, path: str, body: Any) -> Any:
        if self.reject_token:
            return _error(401, "401: Unauthorized", 0)
        match (method, path.split("/")[1:]):
            case ("GET", ["users", "@me"]):
                return self.bot_user
            case ("GET", ["oauth2", "applications", "@me"]):
                return self._application()
            case ("PUT", ["applications", _, *_, "commands"]):
                return [self._command(c) for c in body]
            case ("POST", ["interactions", _, token, "callback"]):
                return self._callback(self._interactions[token], body)
            case ("POST", ["webhooks", _, token]):
                return self._followup(self._interactions[token], body)
            case ("DELETE", ["webhooks", _, token, "messages", "@original"]):
                return self._delete_original(self._interactions[token])
            case ("PATCH", ["webhooks", _, token, "messages", message_id]):
                return self._edit_webhook_message(self._interactions[token], message_id, body)
            case ("POST", ["channels", channel_id, "typing"]):
                return None
            case ("POST", ["channels", channel_id, "messages"]):
                return self._send(int(channel_id), body)
            case ("PATCH", ["channels", channel_id, "messages", message_id]):
                return self._edit(int(message_id), body)
            case ("POST", ["channels", channel_id, "messages", message_id, "crosspost"]):
                self.crossposted.append(int(message_id))
                return self.messages.get(int(message_id)) or _error(404, "Unknown Message", 10008)
            case ("POST", ["channels", channel_id, "messages", message_id, "threads"]):
                if self.refuse_threads:
                    return _error(403, "Missing Permissions", 50013)
                return await self._start_thread(int(channel_id), int(message_id), body)
            case ("POST", ["users", "@me", "channels"]):
                recipient = str(body.get("recipient_id", self.researcher["id"]))
                if recipient == self.researcher["id"]:
                    return {
                        "id": str(self.dm_channel_id),
                        "type": 1,
                        "recipients": [self.researcher],
                    }
                channel = self.dm_channels.setdefault(recipient, self.snowflake())
                return {
                    "id": str(channel),
                    "type": 1,
                    "recipients": [{**self.researcher, "id": recipient}],
                }
        return _error(404, "404: Not Found", 0)

    def _send(self, channel_id: int, body: dict) -> Any:
        """A new message, unless its nonce was enforced and already used in this channel."""
        self._sends += 1
        if self._sends in self.server_errors:
            return _error(500, "500: Internal Server Error", 0)
        if channel_id in self.blocked_channels:
            return _error(403, "Cannot send messages to this user", 50007)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            key = (channel_id, str(nonce))
            if key in self._nonces:
                return self.messages[self._nonces[key]]
        fields = {k: v for k, v in body.items() if k not in ("nonce", "enforce_nonce")}
        message = self._store(self._message(channel_id, self.bot_user, **fields))
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[(channel_id, str(nonce))] = int(message["id"])
        return message

    def _edit(self, message_id: int, body: dict) -> Any:
        if message_id not in self.messages:
            return _error(404, "Unknown Message", 10008)
        self.messages[message_id].update(
            {k: v for k, v in body.items() if k in ("content", "embeds", "components")}
        )
        return self.messages[message_id]

    def copies(self, channel_id: int) -> int:
        """How many messages the bot posted in a channel (broadcasts land once each)."""
        return sum(1 for m in self.messages.values() if int(m["channel_id"]) == channel_id)

    def _application(self) -> dict:
        return {
            "id": str(self.application_id),
            "name": "ipbot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "owner": self.researcher,
            "flags": self._application_flags(),
        }

    def _command(self, command: dict) -> dict:
        return {
            "id": str(self.snowflake()),
            "application_id": str(self.application_id),
            "version": str(self.snowflake()),
            **command,
        }

    def _message(self, channel_id: int, author: dict, content: str = "", **fields: Any) -> dict:
        message = {
            "id": str(self.snowflake()),
            "channel_id": str(channel_id),
            "author": author,
            "content": content or "",
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        known = ("embeds", "components", "flags", "message_reference")
        message.update({k: v for k, v in fields.items() if k in known and v is not None})
        return message

    def bot_message_from_earlier_session(self, custom_ids: list[str]) -> dict:
        """A message with buttons that the bot sent before it was restarted."""
        buttons = [{"type": 2, "style": 2, "label": c, "custom_id": c} for c in custom_ids]
        components = [{"type": 1, "components": buttons}]
        return self._store(self._message(self.channel_id, self.bot_user, components=components))

    def _store(self, message: dict) -> dict:
        self.messages[int(message["id"])] = message
        return message

    def _callback(self, record: _Interaction, body: dict) -> dict:
        kind = body["type"]
        data = body.get("data") or {}
        message = None
        if kind in (4, 5):  # a new message, or "thinking..." until the first follow-up
            record.loading = kind == 5
            flags = data.get("flags", 0) | (FLAG_LOADING if kind == 5 else 0)
            message = self._store(self._webhook_message(record, {**data, "flags": flags}))
            record.message_id = int(message["id"])
        elif kind == 7 and record.message_id:  # update the message the button is on
            message = self._update(record.message_id, data)
        result: dict[str, Any] = {
            "interaction": {
                "id": str(record.id),
                "type": 2,
                "response_message_id": message and message["id"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(data.get("flags", 0) & FLAG_EPHEMERAL),
            }
        }
        if message is not None:
            result["resource"] = {"type": kind, "message": message}
        return result

    def _webhook_message(self, record: _Interaction, body: dict) -> dict:
        message = self._message(record.channel_id, self.bot_user, **body)
        message.update(
            content=body.get("content") or "",
            webhook_id=str(self.application_id),
            application_id=str(self.application_id),
        )
        return message

    def _followup(self, record: _Interaction, body: dict) -> dict:
        if record.loading and record.message_id:  # the first follow-up replaces "thinking..."
            record.loading = False
            # as on Discord: it keeps the visibility of the deferred message, whatever its flags
            flags = self.messages[record.message_id].get("flags", 0) & ~FLAG_LOADING
            return self._update(record.message_id, {**body, "flags": flags})
        return self._store(self._webhook_message(record, body))

    def _delete_original(self, record: _Interaction) -> None:
        if record.message_id is not None:
            self.messages.pop(record.message_id, None)
        record.message_id, record.loading = None, False

    def _edit_webhook_message(self, record: _Interaction, message_id: str, body: dict) -> dict:
        target = record.message_id if message_id == "@original" else int(message_id)
        if target is None:
            return self._store(self._webhook_message(record, body))
        return self._update(target, body)

    def _update(self, message_id: int, changes: dict) -> dict:
        message = self.messages[message_id]
        for key in ("content", "embeds", "components", "flags"):
            if key in changes and changes[key] is not None:
                message[key] = changes[key]
        message["edited_timestamp"] = _now()
        return message

    async def _start_thread(self, channel_id: int, message_id: int, body: dict) -> Any:
        if not 1 <= len(body.get("name") or "") <= 100:
            return _error(400, "Invalid Form Body: name must be 1 to 100 characters", 50035)
        thread = {
            "id": str(message_id),  # a thread started from a message takes the message's id
            "guild_id": str(self.guild_id),
            "parent_id": str(channel_id),
            "owner_id": self.bot_user["id"],
            "name": body["name"],
            "type": 11,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": _now(),
                "locked": False,
            },
        }
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return thread


async def _read_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        return json.loads(str(form["payload_json"])) if "payload_json" in form else dict(form)
    text = await request.text()
    return json.loads(text) if text else None


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py parses a body as JSON only if the content type is exactly this (no charset)
    headers = {"Content-Type": "application/json"}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers)


def _error(status: int, message: str, code: int) -> web.Response:
    return _json({"message": message, "code": code}, status)


def _now() -> str:
    return datetime.now(UTC).isoformat()
