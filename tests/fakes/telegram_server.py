"""A fake Telegram Bot API on 127.0.0.1, so tests drive the real python-telegram-bot offline.

It answers every method the bot calls, serves queued updates to getUpdates long polls (or keeps
what setWebhook was given, for a test to POST updates itself), records each call with its
parameters, and rejects what Telegram would reject (broken HTML, texts over 4,096 characters,
bad button payloads, a callback query answered twice). A test pushes updates
(`private_message`, `group_message`, `press`, `inline_query`) and awaits `next_call(method)`.
Like Telegram it keeps inline results for their cache_time (for everyone, or for the asker
with is_personal) and puts a reply without a topic into the topic of the message it replies to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from tests.fakes import encodable
from tests.fakes.telegram_rules import (
    Rejected,
    check_commands,
    check_inline_results,
    check_markup,
    check_text,
    entities_of,
)

TOKEN = "7000000001:AAFakeSecretTokenThatMustNeverBeLogged"
BOT_USER = {
    "id": 7000000001,
    "is_bot": True,
    "first_name": "ipbot",
    "username": "ipbot_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": True,
}
USER_ID = 1001
GROUP = {"id": -1002003004005, "type": "supergroup", "title": "Research office"}
ANONYMOUS_ADMIN = 1087968824  # GroupAnonymousBot, the sender of what admins post as the group
CHANNEL_BOT = 136817688  # Channel_Bot, the sender of what members post as one of their channels
INLINE_CACHE_DEFAULT = 300  # seconds Telegram keeps inline results when no cache_time is given
CHAT_ACTIONS = {"typing", "upload_photo", "record_video", "upload_document", "find_location"}
# Parameters that stay strings even when they look like JSON ("123" as a question is text).
TEXT_PARAMETERS = {
    "text",
    "caption",
    "query",
    "callback_query_id",
    "inline_query_id",
    "next_offset",
    "parse_mode",
    "action",
    "url",
    "secret_token",
}


@dataclass
class Call:
    """One request the bot made, with what the fake answered."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))

    @property
    def buttons(self) -> list[dict[str, Any]]:
        markup = self.params.get("reply_markup") or {}
        return [b for row in markup.get("inline_keyboard", []) for b in row]

    @property
    def button_texts(self) -> list[str]:
        return [b["text"] for b in self.buttons]


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        description: str,
        retry_after: int | None = None,
        echo_url: bool = False,
    ):
        super().__init__(description)
        self.body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            self.body["parameters"] = {"retry_after": retry_after}
        self.echo_url = echo_url

    def echoing(self, url: str) -> ApiError:
        """This error with the request URL (token included) in its description, if it echoes."""
        if not self.echo_url:
            return self
        description = f"{self.body['description']} ({'; '.join(url_echoes(url))})"
        return ApiError(self.body["error_code"], description)


def url_echoes(url: str) -> list[str]:
    """A URL as proxies and error pages repeat it: plain, URL-encoded, in HTML entities."""
    return [
        url,
        quote(url, safe=""),
        url.replace(":", "&#58;"),
        url.replace(":", "&#x3a;"),
        "".join(f"&#{ord(c)};" for c in url),
        "".join(f"&#x{ord(c):X};" for c in url),
    ]


class FakeTelegram:
    """The Bot API at `base_url`; use as `async with FakeTelegram() as telegram:`."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._updates: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._seen: dict[str, int] = {}
        self._failures: dict[str, list[ApiError]] = {}
        self._answered_queries: set[str] = set()
        self._chats: dict[int, dict[str, Any]] = {GROUP["id"]: GROUP}  # as last seen in updates
        self._topics: dict[tuple[int, int], int] = {}  # (chat, message) -> its forum topic
        # Inline mode: who asked what, and the results Telegram keeps for cache_time seconds,
        # keyed by (query, offset, user), the user None unless the bot said is_personal
        self._inline_asked: dict[str, tuple[int, str, str]] = {}
        self._inline_cache: dict[tuple[str, str, int | None], tuple[float, list[Any]]] = {}
        self.inline_shown: dict[str, list[dict[str, Any]]] = {}  # query id -> what the user saw
        self._wakeup = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Broadcast faults, as Telegram shows them to a bot that sends to many chats.
        self.admins: set[int] = set()  # users who administer GROUP (getChatMember)
        self.blocked: set[int] = set()  # chats whose user blocked the bot: 403
        self.migrated: dict[int, int] = {}  # group id -> its new supergroup id: 400 + migrate_to
        self.flood_per_second: int | None = None  # more sends than this in a second: 429
        self.server_errors: set[int] = set()  # the Nth sendMessage calls (1-based) answer 502
        self.send_latency = 0.0  # seconds each sendMessage takes, to keep sends in flight
        self._send_times: list[float] = []
        self._sends = 0
        # Webhook mode: what setWebhook was given, and the delivery error getWebhookInfo reports.
        self.webhook: dict[str, Any] = {}
        self.webhook_error: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True
        self._changed()  # end pending long polls now rather than at their timeout
        if self._runner is not None:
            await self._runner.cleanup()

    # Driving the bot: updates as Telegram would deliver them.
    def private_message(
        self, text: str, user_id: int = USER_ID, reply_to: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        chat = {"id": user_id, "type": "private", "first_name": f"User{user_id}"}
        return self._queue_message(text, chat, user_id, reply_to)

    def group_message(
        self,
        text: str,
        user_id: int = USER_ID,
        reply_to: dict[str, Any] | None = None,
        topic: int | None = None,
        entities: tuple[dict[str, Any], ...] = (),
    ) -> dict[str, Any]:
        """A message in the supergroup; with `topic`, in that forum topic (the group is then a
        forum, as Telegram marks it). `entities` adds to those Telegram finds in the text, e.g.
        a text_mention: a person without a username, picked from the member list."""
        chat = GROUP if topic is None else {**GROUP, "is_forum": True}
        message = self._message(text, chat, user_id, reply_to)
        if entities:
            message["entities"] = [*message.get("entities", []), *entities]
        if topic is not None:
            message.update(message_thread_id=topic, is_topic_message=True)
            self._topics[(chat["id"], message["message_id"])] = topic
        self._queue(message=message)
        return message

    def pinned_in_private(self, pinned: dict[str, Any], user_id: int = USER_ID) -> dict[str, Any]:
        """The service message Telegram sends when the user pins `pinned` in their chat."""
        chat = {"id": user_id, "type": "private", "first_name": f"User{user_id}"}
        message = self._message("", chat, user_id)
        del message["text"]
        message["pinned_message"] = pinned
        self._queue(message=message)
        return message

    def anonymous_admin_message(self, text: str) -> dict[str, Any]:
        """A message an administrator posts as the group itself: Telegram sends it from
        GroupAnonymousBot, with the group as `sender_chat`."""
        return self.message_as_chat(text, GROUP, GROUP)

    def message_as_chat(
        self, text: str, sender_chat: dict[str, Any], chat: dict[str, Any] = GROUP
    ) -> dict[str, Any]:
        """A message posted on behalf of a chat: Telegram names a service account as `from`,
        the same for everyone (GroupAnonymousBot for the group itself, Channel_Bot for a
        channel), and the chat as `sender_chat`."""
        message = self._message(text, chat, ANONYMOUS_ADMIN)
        service = ANONYMOUS_ADMIN if sender_chat["id"] == chat["id"] else CHANNEL_BOT
        name = "Group" if service == ANONYMOUS_ADMIN else "Channel"
        message["from"] = {"id": service, "is_bot": True, "first_name": name}
        message["sender_chat"] = sender_chat
        self._queue(message=message)
        return message

    def group_photo(self, caption: str, user_id: int = USER_ID) -> dict[str, Any]:
        """A photo with a caption in the supergroup (a caption has entities, as text does)."""
        message = self._message(caption, GROUP, user_id)
        message["caption"] = message.pop("text")
        if entities := message.pop("entities", None):
            message["caption_entities"] = entities
        message["photo"] = [{"file_id": "p1", "file_unique_id": "u1", "width": 90, "height": 90}]
        self._queue(message=message)
        return message

    def press(
        self,
        message: dict[str, Any],
        button_text: str,
        user_id: int = USER_ID,
        old: str | None = None,
    ) -> None:
        """Tap a button of a message the bot sent, as that message looks now.

        `old` plays a tap under a message too old for Telegram to send in full: "inaccessible"
        (an InaccessibleMessage: only its chat, its id and date 0) or "topicless" (the message
        without the forum topic it is in).
        """
        update = self.press_update(message, button_text, user_id)
        pressed_on = update["callback_query"]["message"]
        if old == "inaccessible":
            pressed_on = {k: pressed_on[k] for k in ("chat", "message_id")} | {"date": 0}
        elif old == "topicless":
            pressed_on = {
                k: v
                for k, v in pressed_on.items()
                if k not in ("message_thread_id", "is_topic_message")
            }
        update["callback_query"]["message"] = pressed_on
        self._queue(**update)

    def press_update(
        self, message: dict[str, Any], button_text: str, user_id: int = USER_ID
    ) -> dict[str, Any]:
        """The update a tap on a button makes, as Telegram would POST it to a webhook."""
        current = self.messages[(message["chat"]["id"], message["message_id"])]
        buttons = [
            b for row in current.get("reply_markup", {}).get("inline_keyboard", []) for b in row
        ]
        matches = [b for b in buttons if b["text"] == button_text]
        if not matches:
            shown = [b["text"] for b in buttons]
            raise AssertionError(f"no button {button_text!r} under the message; it shows {shown}")
        return self._callback(current, matches[0]["callback_data"], user_id)

    def press_data(self, message: dict[str, Any], data: str, user_id: int = USER_ID) -> None:
        """A callback query with any payload, as a tap on an old or forged button sends."""
        self._queue(**self._callback(message, data, user_id))

    def _callback(self, message: dict[str, Any], data: str, user_id: int) -> dict[str, Any]:
        query = {"id": f"cq{next(self._ids)}", "from": self._user(user_id), "data": data}
        return {"callback_query": {**query, "chat_instance": "ci", "message": message}}

    def inline_query(self, query: str, user_id: int = USER_ID, offset: str = "") -> str:
        """`@bot query` typed in any chat; its id, for `inline_results`.

        Results Telegram still keeps for the same query are shown without asking the bot.
        """
        query_id = f"iq{next(self._ids)}"
        now = time.monotonic()
        for who in (user_id, None):
            expires, results = self._inline_cache.get((query, offset, who), (0.0, []))
            if expires > now:
                self.inline_shown[query_id] = results
                self._changed()
                return query_id
        self._inline_asked[query_id] = (user_id, query, offset)
        fields = {"id": query_id, "from": self._user(user_id), "query": query}
        self._queue(inline_query={**fields, "offset": offset, "chat_type": "sender"})
        return query_id

    async def inline_results(self, query_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The results the user who typed an inline query was shown (by the bot or the cache)."""
        if not await self._wait(lambda: query_id in self.inline_shown, timeout):
            raise AssertionError(f"the user was shown no results for {query_id} in {timeout} s")
        return self.inline_shown[query_id]

    def fail_next(
        self,
        method: str,
        code: int = 429,
        description: str | None = None,
        retry_after: int = 1,
        echo_url: bool = False,
    ) -> None:
        """Answer the next call of `method` with an error (429 carries retry_after).

        With `echo_url` the description repeats the request URL, token included, in the
        encodings of `url_echoes`, as some proxies and error pages do.
        """
        if code == 429:
            error = ApiError(
                429, description or f"Too Many Requests: retry after {retry_after}", retry_after
            )
        else:
            error = ApiError(code, description or "Bad Gateway", echo_url=echo_url)
        self._failures.setdefault(method, []).append(error)

    # Observing the bot.
    async def next_call(self, method: str, timeout: float = 20.0) -> Call:
        """The bot's next call of `method` that this test has not looked at yet."""
        seen = self._seen.get(method, 0)
        if not await self._wait(lambda: len(self.calls_of(method)) > seen, timeout):
            made = sorted({c.method for c in self.calls})
            raise AssertionError(
                f"the bot did not call {method} within {timeout} s; it called {made}"
            )
        self._seen[method] = seen + 1
        return self.calls_of(method)[seen]

    async def replies_in(self, chat_id: int, timeout: float = 20.0) -> list[Call]:
        """The messages sent to a chat so far, once there is at least one."""

        def sent() -> list[Call]:
            return [c for c in self.calls_of("sendMessage") if int(c.params["chat_id"]) == chat_id]

        if not await self._wait(lambda: bool(sent()), timeout):
            raise AssertionError(f"the bot sent nothing to chat {chat_id} within {timeout} s")
        return sent()

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # The HTTP side.
    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        call = Call(method, await _read_params(request))
        api = getattr(self, f"_api_{method}", None)
        try:
            if api is None:
                raise ApiError(404, "Not Found")
            if not encodable(call.params):
                raise ApiError(400, "Bad Request: strings must be encoded in UTF-8")
            failures = self._failures.get(method)
            if failures:
                raise failures.pop(0).echoing(str(request.url))
            call.result = await api(call.params)
            body: dict[str, Any] = {"ok": True, "result": call.result}
        except ApiError as exc:
            call.error = body = exc.body
        except Rejected as exc:
            call.error = body = ApiError(400, str(exc)).body
        if method != "getUpdates" or call.result or call.error:  # idle polls would drown it
            self.calls.append(call)
            self._changed()
        return web.json_response(body, status=body.get("error_code", 200))

    def _queue(self, **payload: Any) -> None:
        self._updates.append(self.update(**payload))
        self._changed()

    def _changed(self) -> None:
        """Wake everyone waiting (long polls, tests) to look again."""
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    async def _wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready() and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
        return ready()

    def _queue_message(
        self, text: str, chat: dict[str, Any], user_id: int, reply_to: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        message = self._message(text, chat, user_id, reply_to)
        self._queue(message=message)
        return message

    def update(self, **payload: Any) -> dict[str, Any]:
        """An update with a new id around `payload` (a message, a callback query...)."""
        return {"update_id": next(self._ids), **payload}

    def private_update(self, text: str, user_id: int = USER_ID) -> dict[str, Any]:
        """An update as Telegram would POST it to a webhook (not served to getUpdates)."""
        chat = {"id": user_id, "type": "private", "first_name": f"User{user_id}"}
        return {"update_id": next(self._ids), "message": self._message(text, chat, user_id)}

    def _message(
        self, text: str, chat: dict[str, Any], user_id: int, reply_to: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": chat,
            "from": self._user(user_id),
            "text": text,
        }
        if entities := entities_of(text):
            message["entities"] = entities
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self._chats[chat["id"]] = chat
        return message

    @staticmethod
    def _user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}

    # Bot API methods.
    async def _api_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return BOT_USER

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates") is True:
            self._updates.clear()
        self.webhook = {}
        return True

    async def _api_setWebhook(self, params: dict[str, Any]) -> bool:
        """Telegram accepts only https URLs, and secrets of 1-256 of A-Z a-z 0-9 _ -."""
        url = str(params.get("url", ""))
        if url and not url.startswith("https://"):
            raise ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        secret = str(params.get("secret_token", ""))
        if secret and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if params.get("drop_pending_updates") is True:
            self._updates.clear()
        self.webhook = dict(params) if url else {}
        return True

    async def _api_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        """What Telegram reports; `webhook_error` plays a failing delivery to the webhook."""
        info: dict[str, Any] = {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook.get("allowed_updates"):
            info["allowed_updates"] = self.webhook["allowed_updates"]
        if self.webhook and self.webhook_error:
            info |= {"last_error_date": int(time.time()), "last_error_message": self.webhook_error}
        return info

    async def _api_setMyCommands(self, params: dict[str, Any]) -> bool:
        check_commands(params.get("commands", []))
        return True

    async def _api_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        allowed = params.get("allowed_updates") or None

        def deliverable() -> list[dict[str, Any]]:
            return [
                u
                for u in self._updates
                if allowed is None or set(u) - {"update_id"} <= set(allowed)
            ]

        await self._wait(lambda: bool(deliverable()), float(params.get("timeout") or 0))
        return deliverable()[: int(params.get("limit") or 100)]

    def copies(self, chat_id: int) -> int:
        """How many messages the bot has delivered to a chat."""
        return sum(1 for chat, _ in self.messages if chat == chat_id)

    def _broadcast_faults(self, chat_id: int) -> None:
        """Raise what Telegram would answer this send instead of delivering it."""
        self._sends += 1
        now = time.monotonic()
        self._send_times = [t for t in self._send_times if now - t < 1.0]
        if self.flood_per_second is not None and len(self._send_times) >= self.flood_per_second:
            raise ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        self._send_times.append(now)
        if self._sends in self.server_errors:
            raise ApiError(502, "Bad Gateway")
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.migrated:
            error = ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat")
            error.body["parameters"] = {"migrate_to_chat_id": self.migrated[chat_id]}
            raise error

    async def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        """A message in a forum goes to `message_thread_id`, or else to the topic of the message
        it replies to (the General topic if neither is given)."""
        chat_id = int(params["chat_id"])
        self._broadcast_faults(chat_id)
        if self.send_latency:
            await asyncio.sleep(self.send_latency)
        visible = check_text(str(params.get("text", "")), params.get("parse_mode"))
        markup = check_markup(params.get("reply_markup"))
        message: dict[str, Any] = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": BOT_USER,
            "text": visible,
        }
        if markup:
            message["reply_markup"] = markup
        reply = (params.get("reply_parameters") or {}).get("message_id")
        if reply is not None:
            message["reply_to_message"] = {"message_id": reply, "date": 0, "chat": message["chat"]}
        topic = params.get("message_thread_id") or self._topics.get((chat_id, int(reply or 0)))
        if topic:  # sent into a forum topic
            message.update(message_thread_id=int(topic), is_topic_message=True)
            self._topics[(chat_id, message["message_id"])] = int(topic)
        self.messages[(chat_id, message["message_id"])] = message
        return message

    async def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        if "inline_message_id" in params:
            check_text(str(params.get("text", "")), params.get("parse_mode"))
            return True
        message = self._stored(params)
        visible = check_text(str(params.get("text", "")), params.get("parse_mode"))
        markup = check_markup(params.get("reply_markup"))
        if visible == message["text"] and markup == message.get("reply_markup"):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
            )
        message["text"] = visible
        message.pop("reply_markup", None)
        if markup:
            message["reply_markup"] = markup
        return message

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        if "inline_message_id" in params:
            return True
        message = self._stored(params)
        markup = check_markup(params.get("reply_markup"))
        if markup == message.get("reply_markup"):
            raise ApiError(400, "Bad Request: message is not modified")
        message.pop("reply_markup", None)
        if markup:
            message["reply_markup"] = markup
        return message

    async def _api_getChatMember(self, params: dict[str, Any]) -> dict[str, Any]:
        """Group members are plain members unless listed in `admins`."""
        user_id = int(params["user_id"])
        status = "administrator" if user_id in self.admins else "member"
        member: dict[str, Any] = {"status": status, "user": self._user(user_id)}
        if status == "administrator":
            member |= {
                "can_be_edited": False,
                "is_anonymous": False,
                "can_manage_chat": True,
                "can_delete_messages": True,
                "can_manage_video_chats": True,
                "can_restrict_members": True,
                "can_promote_members": False,
                "can_change_info": True,
                "can_invite_users": True,
                "can_post_stories": False,
                "can_edit_stories": False,
                "can_delete_stories": False,
            }
        return member

    async def _api_sendChatAction(self, params: dict[str, Any]) -> bool:
        if params.get("action") not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id"))
        if query_id in self._answered_queries:
            raise ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        if len(str(params.get("text", ""))) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        self._answered_queries.add(query_id)
        return True

    async def _api_answerInlineQuery(self, params: dict[str, Any]) -> bool:
        """Shows the results to the user who asked, and keeps them for `cache_time` seconds:
        for that user only with `is_personal`, else for anyone who types the same query."""
        results = params.get("results") or []
        check_inline_results(results)
        query_id = str(params.get("inline_query_id"))
        if query_id not in self._inline_asked:
            return True
        user_id, query, offset = self._inline_asked[query_id]
        self.inline_shown[query_id] = results
        cache_time = int(params.get("cache_time", INLINE_CACHE_DEFAULT))
        if cache_time > 0:
            who = user_id if params.get("is_personal") is True else None
            self._inline_cache[(query, offset, who)] = (time.monotonic() + cache_time, results)
        return True

    async def _api_deleteMessage(self, params: dict[str, Any]) -> bool:
        self._stored(params)
        del self.messages[(int(params["chat_id"]), int(params["message_id"]))]
        return True

    async def _api_close(self, params: dict[str, Any]) -> bool:
        return True

    async def _api_logOut(self, params: dict[str, Any]) -> bool:
        return True

    def _stored(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (int(params.get("chat_id", 0)), int(params.get("message_id", 0)))
        if key not in self.messages:
            raise ApiError(400, "Bad Request: message to edit not found")
        return self.messages[key]

    def _chat(self, chat_id: int) -> dict[str, Any]:
        """A chat as updates last showed it (a group, or a forum); else a private chat."""
        if chat_id in self._chats:
            return self._chats[chat_id]
        return {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Form or JSON parameters; JSON-valued form fields (reply_markup, results...) decoded."""
    if request.content_type == "application/json":
        return dict(await request.json())
    form = await request.post() if request.can_read_body else {}
    params: dict[str, Any] = dict(request.query)
    for key, value in form.items():
        params[key] = value if key in TEXT_PARAMETERS else _maybe_json(str(value))
    return params


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
