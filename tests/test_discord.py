"""The Discord adapter through discord.py's real dispatch, against a fake Discord on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from bot.assistant import Assistant
from bot.commands import COMMANDS
from bot.discord import EXPIRED, SORRY, run_discord
from bot.discord_format import answer_embed, thread_name
from bot.replies import DISCLAIMER, NOT_ABOUT_IP, AnswerReply, User
from bot.settings import Settings, SettingsError
from bot.store import Store
from retrieval.multilingual import NOTES
from retrieval.search import Retriever
from tests.conftest import long_digest
from tests.fakes.discord_server import FLAG_EPHEMERAL, MESSAGE_CONTENT_INTENT, Call, FakeDiscord

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

QUESTION = "Who owns the results of a joint research project?"
OFF_TOPIC = "What is the best recipe for chocolate cake?"
TOKEN = "fake-discord-token"


def embed_length(embed: dict) -> int:
    fields = embed.get("fields", [])
    parts = [embed.get("title", ""), embed.get("description", "")]
    parts += [embed.get("footer", {}).get("text", ""), embed.get("author", {}).get("name", "")]
    return sum(map(len, parts)) + sum(len(f["name"]) + len(f["value"]) for f in fields)


def assert_sendable(message: dict) -> None:
    """What Discord would reject, or what could ping someone, fails here."""
    mentions = message.get("allowed_mentions") or {}
    pings = mentions.get("replied_user") or mentions.get("users") or mentions.get("roles")
    assert mentions.get("parse") == [] and not pings, f"a message could ping: {mentions}"
    assert len(message.get("content") or "") <= 2000
    assert len(message.get("embeds", [])) <= 10
    for embed in message.get("embeds", []):
        assert len(embed.get("title", "")) <= 256
        assert len(embed.get("description", "")) <= 4096
        assert len(embed.get("fields", [])) <= 25
        fields = embed.get("fields", [])
        assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in fields)
        assert len(embed.get("footer", {}).get("text", "")) <= 2048
        assert embed_length(embed) <= 6000


def custom_ids(message: dict) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row["components"]]


def settings_for(fake: FakeDiscord, **overrides: object) -> Settings:
    """Settings that point the real library at the fake (started) Discord."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        discord_token=TOKEN,
        discord_api_url=fake.api_url,
        discord_gateway_url=fake.gateway_url,
        discord_guild_id=fake.guild_id,
        **overrides,
    )


async def start_bot(fake: FakeDiscord, assistant: Assistant, **settings: object):
    await fake.start()
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(assistant, settings_for(fake, **settings), stop))
    ready = asyncio.create_task(fake.wait_until_ready())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # the bot stopped before it was ready: show why
        ready.cancel()
        task.result()
    return stop, task


async def stop_bot(fake: FakeDiscord, stop: asyncio.Event, task: asyncio.Task) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)  # run_discord returns soon after stop
    await fake.stop()
    for call in fake.calls:
        if call.message is not None:
            assert_sendable(call.message)


@pytest.fixture
def bot_settings() -> dict[str, object]:
    """Settings for the bot under test; a test overrides them with `parametrize`."""
    return {}


@pytest.fixture
async def fake(assistant: Assistant, bot_settings: dict[str, object]) -> AsyncIterator[FakeDiscord]:
    """A fake Discord with the bot connected to it, ready for events."""
    server = FakeDiscord()
    stop, task = await start_bot(server, assistant, **bot_settings)
    yield server
    await stop_bot(server, stop, task)


async def slash(fake: FakeDiscord, name: str, /, **options: str | bool) -> tuple[Call, Call | None]:
    """Run a slash command; return its callback and, if deferred, its first follow-up."""
    mark = len(fake.calls)
    token = await fake.run_command(name, **options)
    callback = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")
    if callback.body["type"] != 5:
        return callback, None
    return callback, await fake.next_call(mark, "POST", rf"/webhooks/\d+/{token}")


async def answer_to_mention(fake: FakeDiscord, text: str) -> tuple[Call, Call]:
    mark = len(fake.calls)
    question = await fake.post_message(text, mention=True)
    thread = await fake.next_call(mark, "POST", rf"/channels/\d+/messages/{question['id']}/threads")
    answer = await fake.next_call(mark, "POST", rf"/channels/{question['id']}/messages")
    return thread, answer


async def test_slash_ask_is_deferred_then_answered_with_a_cited_embed(fake: FakeDiscord) -> None:
    callback, followup = await slash(fake, "ask", question=QUESTION)

    assert callback.body["type"] == 5, "the bot must defer before searching (3-second window)"
    embed = followup.body["embeds"][0]
    assert embed["title"] == "Intellectual assets management"
    assert QUESTION in embed["description"]
    assert embed["footer"]["text"] == DISCLAIMER
    first = embed["fields"][0]
    assert first["name"].startswith("1. ")
    assert "**" in first["value"], "the highlighted sentence should be bold"
    assert "](https://" in first["value"], "each passage needs a clickable citation"
    more, helpful, not_helpful = custom_ids(followup.body)
    question_id = more.split(":")[1]
    assert (more, helpful, not_helpful) == (
        f"more:{question_id}:3",
        f"fb:{question_id}:+",
        f"fb:{question_id}:-",
    ), "buttons must carry their own data, so they survive a restart"


async def test_slash_ask_works_in_a_direct_message(fake: FakeDiscord) -> None:
    mark = len(fake.calls)
    token = await fake.run_command("ask", dm=True, question="How do I value a patent?")
    followup = await fake.next_call(mark, "POST", rf"/webhooks/\d+/{token}")

    assert followup.body["embeds"][0]["title"] == "IP valuation"


async def test_the_users_discord_language_is_a_hint_to_their_questions_language(
    fake: FakeDiscord,
) -> None:
    question = "Vad betyder nyttiggörande egentligen?"  # langdetect alone leans to Danish
    for locale, note in (("sv-SE", NOTES["sv"]), ("en-GB", NOTES["da"])):
        mark = len(fake.calls)
        token = await fake.run_command("ask", locale=locale, question=question)
        followup = await fake.next_call(mark, "POST", rf"/webhooks/\d+/{token}")
        assert f"*{note}*" in followup.body["embeds"][0]["description"]


async def test_slash_commands_are_synced_to_the_configured_guild(fake: FakeDiscord) -> None:
    sync = fake.calls_since(0, "PUT", rf"/applications/\d+/guilds/{fake.guild_id}/commands")

    commands = {c["name"]: c for c in sync[0].body}
    assert set(commands) == {c.name for c in COMMANDS}, "the tree comes from the registry"
    options = {o["name"]: o for o in commands["ask"]["options"]}
    assert options["question"]["required"] and options["area"]["autocomplete"]


async def test_area_autocomplete_offers_matching_areas(fake: FakeDiscord) -> None:
    mark = len(fake.calls)
    token = await fake.autocomplete("ask", "area", question=QUESTION, area="val")
    callback = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")

    assert callback.body["type"] == 8
    choices = callback.body["data"]["choices"]
    assert choices == [{"name": "IP valuation", "value": "valuation"}]


async def test_area_autocomplete_lists_at_most_25_areas(fake: FakeDiscord) -> None:
    mark = len(fake.calls)
    token = await fake.autocomplete("area", "name", name="")
    callback = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")

    assert 9 <= len(callback.body["data"]["choices"]) <= 25


async def test_mention_is_answered_in_a_thread_named_after_the_question(fake: FakeDiscord) -> None:
    thread, answer = await answer_to_mention(fake, QUESTION)

    assert thread.body["name"] == QUESTION
    assert answer.body["embeds"][0]["title"] == "Intellectual assets management"


async def test_follow_up_in_the_bots_thread_needs_no_mention(fake: FakeDiscord) -> None:
    thread, _ = await answer_to_mention(fake, QUESTION)
    thread_id = thread.path.split("/")[4]

    mark = len(fake.calls)
    await fake.post_message("How do I value a patent?", channel_id=int(thread_id))
    followup = await fake.next_call(mark, "POST", rf"/channels/{thread_id}/messages")

    assert followup.body["embeds"][0]["title"] == "IP valuation"


async def test_a_short_follow_up_in_the_thread_is_read_with_the_question(fake: FakeDiscord) -> None:
    thread, _ = await answer_to_mention(fake, QUESTION)
    thread_id = thread.path.split("/")[4]

    mark = len(fake.calls)
    await fake.post_message("and what about software?", channel_id=int(thread_id))
    followup = await fake.next_call(mark, "POST", rf"/channels/{thread_id}/messages")

    assert "previous question" in followup.body["embeds"][0]["description"]


async def test_people_talking_to_each_other_in_the_bots_thread_are_left_alone(
    fake: FakeDiscord,
) -> None:
    thread, _ = await answer_to_mention(fake, QUESTION)
    thread_id = int(thread.path.split("/")[4])
    colleague = fake.user("colleague")
    mark = len(fake.calls)
    await fake.post_message("did you see the deadline moved?", channel_id=thread_id,
                            author=colleague, mentions=(fake.researcher,))  # fmt: skip
    await fake.post_message("How do I value a patent?", channel_id=thread_id)
    replies = await fake.wait_until(
        lambda: fake.calls_since(mark, "POST", rf"/channels/{thread_id}/messages")
    )
    await asyncio.sleep(0.5)

    assert len(fake.calls_since(mark, "POST", rf"/channels/{thread_id}/messages")) == 1
    assert "deadline" not in str(replies[0].body)


async def test_a_pin_in_a_direct_message_gets_no_reply(fake: FakeDiscord) -> None:
    mark = len(fake.calls)
    await fake.post_message("", dm=True, kind=6)  # Discord's "pinned a message" notice
    await fake.post_message("/help", dm=True)
    first = await fake.next_call(mark, "POST", r"/channels/\d+/messages")

    assert "Please type a question" not in str(first.body) and "/ask" in str(first.body)


async def test_thread_names_carry_no_mention_codes() -> None:
    name = thread_name("hey <@123456789012345678> look: who owns <@&42> results in <#7>?")
    assert name == "hey look: who owns results in ?"


async def test_long_question_names_its_thread_within_100_characters(fake: FakeDiscord) -> None:
    question = "Who owns the results " + "of a joint research project " * 10 + "?"
    thread, _ = await answer_to_mention(fake, question)

    name = thread.body["name"]
    assert len(name) <= 100 and name.endswith("…")
    assert name[:-1].split()[-1] in question.split(), "the name was cut inside a word"


@pytest.mark.parametrize("bot_settings", [{"discord_threads": False}])
@pytest.mark.parametrize("addressed", ["mention", "role_mention"])
async def test_mention_is_answered_in_the_channel_when_threads_are_off(
    fake: FakeDiscord, addressed: str
) -> None:
    """A mention of the bot, or of its own role (Discord's mention picker offers it beside
    the bot), addresses it."""
    mark = len(fake.calls)
    question = await fake.post_message(QUESTION, **{addressed: True})
    reply = await fake.next_call(mark, "POST", rf"/channels/{fake.channel_id}/messages")

    assert str(reply.body["message_reference"]["message_id"]) == question["id"]
    assert reply.body.get("embeds"), "the question should get an answer with passages"
    assert not fake.calls_since(mark, "POST", r".*/threads")


@pytest.mark.parametrize("bot_settings", [{"discord_threads": False}])
async def test_a_reply_to_the_bots_answer_without_the_ping_is_answered(fake: FakeDiscord) -> None:
    """Discord's reply button can leave the ping off: the bot then was not mentioned, and the
    reply was taken for channel chatter."""
    mark = len(fake.calls)
    await fake.post_message(QUESTION, mention=True)
    answer = await fake.next_call(mark, "POST", rf"/channels/{fake.channel_id}/messages")
    mark = len(fake.calls)
    reply = await fake.post_message("How do I value a patent?", reply_to=answer.response)
    second = await fake.next_call(mark, "POST", rf"/channels/{fake.channel_id}/messages")

    assert str(second.body["message_reference"]["message_id"]) == reply["id"]
    assert second.body["embeds"][0]["title"] == "IP valuation"


async def test_channel_chatter_is_ignored(fake: FakeDiscord) -> None:
    mark = len(fake.calls)
    await fake.post_message("Anyone up for lunch? Who owns the fridge?")
    await fake.post_message(QUESTION, dm=True)  # answered after the chatter was handled
    await fake.next_call(mark, "POST", rf"/channels/{fake.dm_channel_id}/messages")
    await asyncio.sleep(0.2)

    assert not fake.calls_since(mark, pattern=rf"/channels/{fake.channel_id}/.*")


async def test_direct_message_is_answered(fake: FakeDiscord) -> None:
    mark = len(fake.calls)
    await fake.post_message("How do I value a patent?", dm=True)
    reply = await fake.next_call(mark, "POST", rf"/channels/{fake.dm_channel_id}/messages")

    assert reply.body["embeds"][0]["title"] == "IP valuation"


async def test_more_button_shows_the_next_passages(fake: FakeDiscord) -> None:
    _, first = await slash(fake, "ask", question=QUESTION)
    message_id = first.message_id

    mark = len(fake.calls)
    token = await fake.click(message_id, custom_ids(first.body)[0])
    callback = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")
    more = await fake.next_call(mark, "POST", rf"/webhooks/\d+/{token}")

    assert callback.body["type"] == 5, "the click must be answered at once (then searched)"
    assert more.body["embeds"][0]["fields"][0]["name"].startswith("4. ")


async def test_feedback_is_recorded_once_per_user(fake: FakeDiscord, assistant: Assistant) -> None:
    _, first = await slash(fake, "ask", question=QUESTION)
    message_id = first.message_id

    replies = []
    for button in custom_ids(first.body)[1:]:
        mark = len(fake.calls)
        token = await fake.click(message_id, button)
        replies.append(await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback"))

    assert [r.body["data"]["content"] for r in replies] == [
        "Thank you for your feedback!",
        "You already rated this answer.",
    ]
    assert all(r.body["data"]["flags"] & FLAG_EPHEMERAL for r in replies)
    assert await assistant.store.feedback_counts() == {True: 1}


async def test_off_topic_question_is_declined_as_no_question_about_ip(fake: FakeDiscord) -> None:
    _, followup = await slash(fake, "ask", question=OFF_TOPIC)

    embed = followup.body["embeds"][0]
    assert embed["title"] == "Not covered"
    assert NOT_ABOUT_IP in embed["description"] and "Closest areas:" not in embed["description"]
    [button] = custom_ids(followup.body)  # no feedback buttons on an abstention
    assert button.startswith("cov:"), "only the offer to tell when it is covered"


async def test_tell_me_when_covered_is_confirmed_to_the_presser_alone(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    _, followup = await slash(fake, "ask", question=OFF_TOPIC)
    mark = len(fake.calls)
    token = await fake.click(followup.message_id, custom_ids(followup.body)[0])
    callback = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")

    assert "private message" in callback.body["data"]["content"]
    assert callback.body["data"]["flags"] & FLAG_EPHEMERAL
    [request] = await assistant.store.open_coverage_requests()
    assert request.platform == "discord" and request.question == OFF_TOPIC


async def test_everyone_in_a_question_cannot_ping(fake: FakeDiscord) -> None:
    _, answer = await answer_to_mention(fake, "@everyone who owns joint research results?")

    description = answer.body["embeds"][0]["description"]
    assert "@everyone" not in description and "@\u200beveryone" in description
    assert_sendable(answer.body)


async def test_browsing_an_area_pages_in_place(fake: FakeDiscord) -> None:
    callback, _ = await slash(fake, "area", name="valuation")
    page = callback.body["data"]
    assert page["embeds"][0]["footer"]["text"].startswith("Page 1 of ")
    message_id = callback.message_id

    mark = len(fake.calls)
    token = await fake.click(message_id, "area:valuation:1")
    turned = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")

    assert turned.body["type"] == 7
    assert turned.body["data"]["embeds"][0]["footer"]["text"].startswith("Page 2 of ")


async def test_areas_help_and_about_answer_at_once(fake: FakeDiscord) -> None:
    replies = {name: (await slash(fake, name))[0].body for name in ("areas", "help", "about")}

    assert all(body["type"] == 4 for body in replies.values())
    assert len(replies["areas"]["data"]["embeds"][0]["fields"]) == 9
    assert replies["help"]["data"]["embeds"][0]["footer"]["text"] == DISCLAIMER
    assert replies["about"]["data"]["embeds"][0]["title"] == "About ipbot"


async def test_unknown_area_gets_an_ephemeral_hint(fake: FakeDiscord) -> None:
    callback, _ = await slash(fake, "area", name="astrology")

    assert callback.body["data"]["flags"] & FLAG_EPHEMERAL
    assert "There is no area called 'astrology'" in callback.body["data"]["content"]


async def test_a_notice_after_thinking_is_seen_by_the_asker_only(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    assistant.rate_limiter.limit = 0  # every question is over the limit
    callback, notice = await slash(fake, "ask", question=QUESTION)
    deleted = fake.calls_since(0, "DELETE", r"/webhooks/\d+/[^/]+/messages/@original")

    assert callback.body["type"] == 5 and deleted, "the public 'thinking...' must go"
    assert notice is not None and notice.body["flags"] & FLAG_EPHEMERAL
    stored = fake.messages[int(notice.response["id"])]
    assert stored["flags"] & FLAG_EPHEMERAL and "faster than I can" in stored["content"]


async def test_a_failing_command_gets_an_ephemeral_apology_and_the_bot_lives_on(
    fake: FakeDiscord,
) -> None:
    callback, _ = await slash(fake, "frobnicate")  # not registered: the library raises

    assert callback.body["data"]["content"] == SORRY
    assert callback.body["data"]["flags"] & FLAG_EPHEMERAL
    _, followup = await slash(fake, "ask", question=QUESTION)
    assert followup.body["embeds"]


async def test_buttons_of_a_forgotten_answer_reply_that_they_expired(fake: FakeDiscord) -> None:
    old = fake.bot_message_from_earlier_session(["ipbot:more", "ipbot:helpful"])

    mark = len(fake.calls)
    token = await fake.click(int(old["id"]), "ipbot:helpful")
    callback = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")

    assert callback.body["data"]["content"] == EXPIRED
    assert callback.body["data"]["flags"] & FLAG_EPHEMERAL


async def test_buttons_keep_working_after_a_restart(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    question_id = await assistant.store.record_question(
        "discord", QUESTION, None, "industry-academia", True, 0.7, ["JIA-D3"]
    )
    old = fake.bot_message_from_earlier_session([f"fb:{question_id}:+"])

    mark = len(fake.calls)
    token = await fake.click(int(old["id"]), f"fb:{question_id}:+")
    callback = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")

    assert callback.body["data"]["content"] == "Thank you for your feedback!"
    assert await assistant.store.feedback_counts() == {True: 1}


async def test_refused_thread_falls_back_to_a_reply(fake: FakeDiscord) -> None:
    fake.refuse_threads = True
    mark = len(fake.calls)
    question = await fake.post_message(QUESTION, mention=True)
    reply = await fake.next_call(mark, "POST", rf"/channels/{fake.channel_id}/messages")

    assert str(reply.body["message_reference"]["message_id"]) == question["id"]
    assert reply.body["embeds"][0]["title"] == "Intellectual assets management"


async def test_reconnect_resumes_the_session_and_keeps_answering(fake: FakeDiscord) -> None:
    await fake.reconnect_request()
    await fake.wait_until(lambda: fake.resumes == 1)

    _, followup = await slash(fake, "ask", question=QUESTION)
    assert followup.body["embeds"]


async def test_message_content_intent_is_requested_only_when_the_portal_allows_it(
    assistant: Assistant,
) -> None:
    intents = {}
    for allowed in (True, False):
        server = FakeDiscord(message_content_allowed=allowed)
        stop, task = await start_bot(server, assistant)
        assert server.identify is not None
        intents[allowed] = server.identify["intents"] & MESSAGE_CONTENT_INTENT
        await stop_bot(server, stop, task)

    assert intents == {True: MESSAGE_CONTENT_INTENT, False: 0}


async def test_without_message_content_thread_follow_ups_need_a_mention(
    assistant: Assistant,
) -> None:
    server = FakeDiscord(message_content_allowed=False)
    stop, task = await start_bot(server, assistant)
    thread, _ = await answer_to_mention(server, QUESTION)
    thread_id = int(thread.path.split("/")[4])

    mark = len(server.calls)
    await server.post_message("How do I value a patent?", channel_id=thread_id)  # arrives empty
    await server.post_message("How do I value a patent?", channel_id=thread_id, mention=True)
    await server.next_call(mark, "POST", rf"/channels/{thread_id}/messages")
    await asyncio.sleep(0.2)
    await stop_bot(server, stop, task)

    replies = server.calls_since(mark, "POST", rf"/channels/{thread_id}/messages")
    assert len(replies) == 1, "an empty (unreadable) message got a reply"
    assert replies[0].body["embeds"][0]["title"] == "IP valuation"


async def test_stop_during_start_up_returns_cleanly(assistant: Assistant) -> None:
    server = FakeDiscord()
    await server.start()
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(run_discord(assistant, settings_for(server), stop), 10)
    await server.stop()


async def test_a_rejected_token_stops_with_a_settings_error(assistant: Assistant) -> None:
    server = FakeDiscord(reject_token=True)
    with pytest.raises(SettingsError, match="Discord rejected IPBOT_DISCORD_TOKEN"):
        await start_bot(server, assistant)
    await server.stop()


async def test_the_token_never_reaches_the_log(
    assistant: Assistant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = FakeDiscord()
    stop, task = await start_bot(server, assistant)
    await slash(server, "ask", question=QUESTION)
    await slash(server, "frobnicate")  # an error is logged with its context
    await stop_bot(server, stop, task)

    assert "Discord /frobnicate failed" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("top_k", [3, 10])
async def test_answers_fit_discord_limits_even_for_long_questions(
    retriever: Retriever, store: Store, top_k: int
) -> None:
    assistant = Assistant(retriever, store, top_k=top_k)
    question = "Who owns the results of a joint research project? " * 39  # ~2,000 characters
    reply = await assistant.ask(User("discord", "1"), question.strip())
    assert isinstance(reply, AnswerReply)

    embed = answer_embed(reply.answer, reply.disclaimer).to_dict()
    assert_sendable({"allowed_mentions": {"parse": []}, "embeds": [embed]})
    assert len(embed["fields"]) == top_k
    assert all("**" in field["value"] for field in embed["fields"])


async def test_a_mention_flood_gets_one_notice_in_a_thread_then_silence(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    assistant.rate_limiter.limit = 2
    mark = len(fake.calls)
    for n in range(20):
        await fake.post_message(f"{QUESTION} ({n})", mention=True)
    await fake.wait_until(
        lambda: len(fake.calls_since(mark, "POST", r"/channels/\d+/messages")) >= 3
    )
    await asyncio.sleep(1.0)  # time enough for the other 17 to be (not) answered

    sent = fake.calls_since(mark, "POST", r"/channels/\d+/messages")
    notices = [c for c in sent if "faster than I can" in (c.body.get("content") or "")]
    assert len(sent) == 3 and len(notices) == 1, "a flood must cost one notice, not one each"
    assert not fake.calls_since(mark, "POST", rf"/channels/{fake.channel_id}/messages"), (
        "nothing may be posted publicly in the channel"
    )
    assert len(fake.calls_since(mark, "POST", r"/channels/\d+/typing")) == 2


async def test_more_clicks_count_toward_the_rate_limit(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    assistant.rate_limiter.limit = 1
    _, first = await slash(fake, "ask", question=QUESTION)
    mark = len(fake.calls)
    tokens = [await fake.click(first.message_id, custom_ids(first.body)[0]) for _ in range(3)]
    for token in tokens:  # every click is acknowledged at once...
        await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")
    await asyncio.sleep(1.0)

    followups = fake.calls_since(mark, "POST", r"/webhooks/\d+/.*")
    assert len(followups) == 1, "...but only the first over the limit is told"
    assert followups[0].body["flags"] & FLAG_EPHEMERAL
    assert "faster than I can" in followups[0].body["content"]


async def test_a_vote_counts_once_per_user_however_often_it_is_clicked(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    _, first = await slash(fake, "ask", question=QUESTION)
    helpful = custom_ids(first.body)[1]
    for _ in range(5):
        mark = len(fake.calls)
        token = await fake.click(first.message_id, helpful)
        await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")

    assert await assistant.store.feedback_counts() == {True: 1}


MANAGE_CHANNELS = 1 << 4


async def test_only_members_who_manage_channels_subscribe_a_channel(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    refused, _ = await slash(fake, "subscribe", areas="valuation")
    fake.member_permissions |= MANAGE_CHANNELS
    accepted, _ = await slash(fake, "subscribe", areas="valuation, open science", weekly=True)

    assert "only this chat's administrators" in refused.body["data"]["content"]
    assert refused.body["data"]["flags"] & FLAG_EPHEMERAL
    assert "IP valuation" in accepted.body["data"]["content"]
    channel = await assistant.store.subscription("discord", str(fake.channel_id))
    assert channel is not None and channel.digest and channel.kind == "group"
    assert channel.areas == ("open-science", "valuation")


async def test_anyone_subscribes_their_own_direct_messages(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    reply, _ = await slash(fake, "subscribe", dm=True)

    assert "Subscribed" in reply.body["data"]["content"]
    mine = await assistant.store.subscription("discord", fake.researcher["id"])
    assert mine is not None and mine.kind == "dm" and mine.areas is None
    assert await assistant.store.subscription("discord", str(fake.channel_id)) is None


async def test_subscribe_autocompletes_the_area_being_typed(fake: FakeDiscord) -> None:
    mark = len(fake.calls)
    token = await fake.autocomplete("subscribe", "areas", areas="valuation, open s")
    callback = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")

    choices = callback.body["data"]["choices"]
    assert [c["value"] for c in choices] == ["valuation, open-science"]


async def test_a_moderator_role_opens_the_moderator_commands(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    assistant.moderators = frozenset({f"discord-role:{fake.moderator_role_id}"})
    refused, _ = await slash(fake, "stats")
    fake.member_roles = [str(fake.moderator_role_id)]
    allowed, _ = await slash(fake, "stats")

    assert "only moderators" in refused.body["data"]["content"]
    assert "No questions in the last 30 days" in allowed.body["data"]["content"]


async def test_shards_set_by_the_setting_all_connect_from_this_process(
    assistant: Assistant,
) -> None:
    server = FakeDiscord()
    stop, task = await start_bot(server, assistant, discord_shards=2)
    try:
        await server.wait_until(lambda: len(server.shards) >= 2, timeout=30)
        assert sorted(server.shards) == [[0, 2], [1, 2]]
        mark = len(server.calls)
        dm = await server.post_message("Who owns the results of a joint research project?", dm=True)
        reply = await server.next_call(mark, "POST", rf"/channels/{dm['channel_id']}/messages")
        assert reply.message and reply.message["embeds"]
    finally:
        await stop_bot(server, stop, task)


async def test_suggest_starts_with_the_slash_command_and_continues_in_direct_messages(
    retriever: Retriever, store: Store, tmp_path
) -> None:
    from bot.suggestions import Suggestions

    assistant = Assistant(retriever, store, suggestions=Suggestions(store, retriever, tmp_path))
    server = FakeDiscord()
    stop, task = await start_bot(server, assistant)
    try:
        mark = len(server.calls)
        _, followup = await slash(server, "suggest")
        assert followup is not None and "sent you a direct message" in str(followup.body)
        opened = await server.next_call(mark, "POST", rf"/channels/{server.dm_channel_id}/messages")
        assert "1, 2 or 3" in str(opened.body), opened.body

        async def say(text: str) -> str:
            mark = len(server.calls)
            await server.post_message(text, dm=True)
            reply = await server.next_call(
                mark, "POST", rf"/channels/{server.dm_channel_id}/messages"
            )
            return str(reply.body)

        assert "Which passage" in await say("2")
        assert "what should change" in await say("VAL-R1")
        await say("The estimate should also mention market studies of similar assets.")
        assert "yes / no" in await say("https://eur-lex.europa.eu/eli/reco/2023/499/oj")
        done = await say("no")
        assert "#1" in done and "queue" in done, done
        [waiting] = await store.open_suggestions()
        assert (waiting.platform, waiting.kind, waiting.passage_id) == (
            "discord", "correction", "VAL-R1",
        )  # fmt: skip
        assert waiting.contact is None  # no consent, no contact kept
    finally:
        await stop_bot(server, stop, task)


async def test_only_a_moderators_press_counts_under_an_announcement_preview(
    fake: FakeDiscord, assistant: Assistant
) -> None:
    """Anyone in the channel can press Confirm or Cancel under a moderator's preview: their
    press is refused to them alone and leaves the buttons, so the moderator can still confirm."""
    assistant.moderators = frozenset({f"discord-role:{fake.moderator_role_id}"})
    fake.member_roles = [str(fake.moderator_role_id)]
    preview, _ = await slash(fake, "announce", update="2023-03-01-code-of-practice-adopted")
    buttons = custom_ids(fake.messages[preview.message_id])
    fake.member_roles = []  # the next presses come from a member who is no moderator
    for button in buttons:
        mark = len(fake.calls)
        token = await fake.click(preview.message_id, button)
        refused = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")
        assert "only moderators" in refused.body["data"]["content"]
        assert refused.body["data"]["flags"] & FLAG_EPHEMERAL
    assert custom_ids(fake.messages[preview.message_id]) == buttons

    fake.member_roles = [str(fake.moderator_role_id)]
    mark = len(fake.calls)
    token = await fake.click(preview.message_id, next(b for b in buttons if b.endswith(":n")))
    cancelled = await fake.next_call(mark, "POST", rf"/interactions/\d+/{token}/callback")
    assert cancelled.body["type"] == 7 and not custom_ids(fake.messages[preview.message_id])


async def test_a_long_digest_keeps_every_update_and_a_long_notice_its_text(
    retriever: Retriever,
) -> None:
    """A digest of eleven updates made an embed of 9,460 characters (Discord refuses over
    6,000), and /gaps was cut at a message's 2,000 characters."""
    from bot.discord import outgoing
    from bot.discord_format import EMBED_MAX, outbound_embed
    from bot.replies import Notice
    from bot.sender import Bulletin

    updates = long_digest(retriever.corpus.areas[:2])
    embed = outbound_embed(Bulletin(updates, digest=True))
    assert len(embed) <= EMBED_MAX and [f.name for f in embed.fields] == [
        f"Update {n}" for n in range(11)
    ]
    assert all("https://example.org/" in (f.value or "") for f in embed.fields)

    gaps = "\n".join(
        f"{n}. A group of questions people asked that found nothing. " * 2 for n in range(30)
    )
    sent = outgoing(Notice("gaps", gaps))
    assert sent is not None and sent.embeds and sent.embeds[0].description == gaps
