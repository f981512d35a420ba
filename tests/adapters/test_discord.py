"""Teams in Discord end to end: real discord.py, the fake Discord, the real host and store.

What a Discord user would see: threads opened by /team or a mention, personas
posting through the webhook, replies reaching the team, approvals by button
or reply (also after a restart), and the bot never answering itself.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.adapters.test_discord_wire import store_bytes
from tests.bot.helpers import ANNOUNCE
from tests.bot.helpers import DEBATE as HOST_DEBATE
from tests.fakes.discord import (
    ALICE,
    BOT_ID,
    CAROL,
    CHANNEL_ID,
    FOREIGN_CHANNEL_ID,
    MALLORY,
    MODERATORS_ROLE_ID,
    OTHER_CHANNEL_ID,
    FakeDiscord,
    wait_until,
)
from threadteam.adapters.discord import DiscordAdapter
from threadteam.bot.host import Host
from threadteam.bot.memory import StoreMemory
from threadteam.bot.stores import SQLiteStore
from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.models import ModelPool
from threadteam.teams.models.scripted import ScriptedModel, reply

# The shared test debate, with an https avatar for Bear: webhooks take images, not emoji.
DEBATE = HOST_DEBATE.replace('":bear:"', '"https://example.com/bear.png"')

INTERVIEW = """
name: interview
description: An analyst asks, you answer, a closer sums up.
model: scripted
agents:
  - {name: analyst, persona: {display_name: Analyst, avatar: ":mag:"}, system_message: Ask.}
  - {name: you, human: true, persona: {display_name: You}}
  - {name: closer, persona: {display_name: Closer}, system_message: "Sum up, say DONE."}
termination:
  any: [{text_mention: DONE}, {max_messages: 8}]
"""

POST_CALL = ("post_message", json.dumps({"channel": "#random", "text": "Release 2.0 is out!"}))


class Bot:
    """The bot process under test: adapter + host + store; `restart()` is a new process."""

    def __init__(self, fake: FakeDiscord, tmp_path: Path) -> None:
        self.fake = fake
        self.db = str(tmp_path / "runs.sqlite3")
        self.teams = tmp_path / "teams"
        self.teams.mkdir()
        self.model = ScriptedModel()
        self.adapter: DiscordAdapter | None = None
        self.host: Host | None = None

    async def start(self, *team_texts: str, model: ScriptedModel | None = None) -> Bot:
        for i, text in enumerate(team_texts):
            (self.teams / f"team{i}.yaml").write_text(textwrap.dedent(text))
        self.model = model or self.model
        store = SQLiteStore(self.db)
        await store.start()
        self.adapter = DiscordAdapter(self.fake.token, api_base=self.fake.url,
                                      memory=StoreMemory(store, "discord"))
        self.host = Host(store=store, catalog=TeamCatalog.load(self.teams, strict=True),
                         models=ModelPool(env={}, overrides={"scripted": self.model}),
                         poster=self.adapter.poster, directory=self.adapter.directory)
        await self.host.start()
        await self.adapter.start(self.host, within=10)
        return self

    async def stop(self) -> None:
        if self.adapter is not None:
            await self.adapter.aclose()
        if self.host is not None:
            await self.host.aclose()
            await self.host.store.aclose()
        self.adapter = self.host = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def summon(self, team: str, task: str, user: int = ALICE) -> dict:
        """/team in #general; returns the thread it opened."""
        before = len(self.fake.threads())
        await self.fake.slash(user, CHANNEL_ID, "team", team=team, task=task)
        threads = await wait_until(lambda: self.fake.threads()[before:], what="a new thread")
        return threads[0]

    def said(self, thread: dict) -> list[tuple[str, str]]:
        """(who, text) of every post in the thread: webhook name, or the bot's own."""
        out = []
        for m in self.fake.posts_in(thread["id"]):
            who = m["author"]["username"] if m.get("webhook_id") else "bot"
            out.append((who, m["content"]))
        return out

    def agents_said(self, thread: dict) -> list[tuple[str, str]]:
        return [p for p in self.said(thread) if p[0] != "bot"]

    async def until_said(self, thread: dict, text: str) -> None:
        await wait_until(lambda: any(text in t for _, t in self.said(thread)),
                         what=f"{text!r} in the thread")
        await self.host.idle()


@pytest.fixture
async def bot(fake_discord: FakeDiscord, tmp_path: Path):
    b = Bot(fake_discord, tmp_path)
    yield b
    await b.stop()


def webhook_posts(fake: FakeDiscord) -> list:
    return fake.calls_to("POST", r"/webhooks/\d+/[^/]+")


async def test_three_personas_post_through_the_webhook_until_final_answer(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    await bot.start(DEBATE, model=ScriptedModel(
        ["Growth is strong.", "Margins are thin.", "FINAL ANSWER: invest slowly."]))
    thread = await bot.summon("debate", "Should we buy ACME stock?")
    await bot.until_said(thread, "Finished")
    assert thread["name"] == "Should we buy ACME stock?"
    assert thread["thread_metadata"]["auto_archive_duration"] == 10080  # runs may wait days
    assert bot.agents_said(thread) == [
        ("🐂 Bull", "Growth is strong."), ("Bear", "Margins are thin."),
        ("Synthesis", "FINAL ANSWER: invest slowly.")]
    bear = next(m for m in fake_discord.posts_in(thread["id"]) if m["content"].startswith("Margins"))
    assert bear["avatar_url"] == "https://example.com/bear.png"
    notices = [t for who, t in bot.said(thread) if who == "bot"]
    assert "debate" in notices[0] and "Finished" in notices[-1]
    # One webhook, made once, every agent post into the run's thread.
    assert len(fake_discord.webhooks) == 1
    assert {c.query.get("thread_id") for c in webhook_posts(fake_discord)} == {thread["id"]}
    # Typing showed in the thread while agents worked.
    assert fake_discord.calls_to("POST", rf"/channels/{thread['id']}/typing")
    # Every post came back as MESSAGE_CREATE (webhook_id or the bot's own) and none
    # reached the team: the model was asked exactly three times.
    assert len(bot.model.requests) == 3
    bot.model.assert_used()


async def test_mention_summons_into_a_thread_from_the_message(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    await bot.start(DEBATE, model=ScriptedModel(["Up.", "Down.", "FINAL ANSWER: flat."]))
    msg = await fake_discord.say(ALICE, CHANNEL_ID, "debate will it rain tomorrow?",
                                 mention_bot=True)
    [thread] = await wait_until(fake_discord.threads)
    assert thread["id"] == msg["id"] and thread["name"] == "will it rain tomorrow?"
    await bot.until_said(thread, "Finished")
    assert [who for who, _ in bot.agents_said(thread)] == ["🐂 Bull", "Bear", "Synthesis"]
    assert bot.model.requests[0].messages[0].content == "will it rain tomorrow?"


async def test_a_human_reply_reaches_the_next_model_request(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    await bot.start(INTERVIEW, model=ScriptedModel(
        ["What is your budget?", "Within 10k we can do it. DONE"]))
    thread = await bot.summon("interview", "plan our offsite")
    await bot.until_said(thread, "waiting for you")
    assert f"<@{ALICE}>" in bot.said(thread)[-1][1]
    await fake_discord.say(ALICE, thread["id"], "About 10k, and not in August.")
    await bot.until_said(thread, "Finished")
    closer_saw = [m.content for m in bot.model.requests[1].messages]
    assert "About 10k, and not in August." in closer_saw
    assert bot.agents_said(thread)[-1] == ("Closer", "Within 10k we can do it. DONE")


async def announce_until_pending(bot: Bot, approvers: str = "[]",
                                 call: tuple[str, str] = POST_CALL) -> tuple[dict, dict]:
    await bot.start(ANNOUNCE.format(approvers=approvers),
                    model=ScriptedModel([reply("", call), "Posted it. DONE"],
                                        leftovers_ok=True))  # some tests leave it pending
    thread = await bot.summon("announce", "announce release 2.0 in #random")
    await bot.until_said(thread, "Approval #1")
    request = next(m for m in bot.fake.posts_in(thread["id"]) if "Approval #1" in m["content"])
    return thread, request


def buttons(message: dict) -> list[dict]:
    return [c for row in message["components"] for c in row["components"]]


async def test_approve_by_button_edits_the_request_and_runs_the_tool(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    thread, request = await announce_until_pending(bot)
    assert [b["label"] for b in buttons(request)] == ["Approve", "Approve for this run", "Deny"]
    approve = buttons(request)[0]["custom_id"]
    # Mallory is not an approver: only she is told, and nothing changes.
    refused = await fake_discord.click(MALLORY, request["id"], approve)
    await wait_until(lambda: fake_discord.responses(refused))
    [answer] = fake_discord.responses(refused)
    assert answer["type"] == 4 and answer["data"]["flags"] & 64
    assert "only" in answer["data"]["content"] and f"<@{ALICE}>" in answer["data"]["content"]
    assert buttons(fake_discord.messages[int(request["id"])])
    # Alice summoned the run, so she decides.
    pressed = await fake_discord.click(ALICE, request["id"], approve)
    await bot.until_said(thread, "Finished")
    assert fake_discord.responses(pressed) == [{"type": 6}]
    settled = fake_discord.messages[int(request["id"])]
    assert settled["content"].startswith(f"✅ Approved by <@{ALICE}>") and not settled["components"]
    [announcement] = fake_discord.posts_in(OTHER_CHANNEL_ID)
    assert announcement["content"] == "Release 2.0 is out!"
    assert announcement["author"]["username"] == "📣 Announcer"
    assert bot.agents_said(thread)[-1] == ("📣 Announcer", "Posted it. DONE")


async def test_approve_by_reply_as_a_member_of_the_approver_role(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    thread, request = await announce_until_pending(bot, approvers='["role:Moderators"]')
    await fake_discord.say(ALICE, thread["id"], "approve")  # the summoner, but not a Moderator
    refusal = await wait_until(lambda: [m for m in fake_discord.posts_in(thread["id"])
                                        if m.get("message_reference")], what="a refusal")
    assert "only members of Moderators" in refusal[0]["content"]
    await fake_discord.say(CAROL, thread["id"], "approve ship it")
    await bot.until_said(thread, "Finished")
    settled = fake_discord.messages[int(request["id"])]
    assert settled["content"].startswith(f"✅ Approved by <@{CAROL}>: ship it")
    assert not settled["components"]
    assert [m["content"] for m in fake_discord.posts_in(OTHER_CHANNEL_ID)] == ["Release 2.0 is out!"]


async def test_deny_by_button(bot: Bot, fake_discord: FakeDiscord) -> None:
    thread, request = await announce_until_pending(bot)
    await fake_discord.click(ALICE, request["id"], buttons(request)[-1]["custom_id"])
    await bot.until_said(thread, "Finished")
    assert fake_discord.messages[int(request["id"])]["content"].startswith("❌ Denied by")
    assert not fake_discord.posts_in(OTHER_CHANNEL_ID)


async def test_a_pending_button_still_works_after_a_restart(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    thread, request = await announce_until_pending(bot)
    await bot.restart()  # a new process: new client, same store
    assert len(fake_discord.identifies) == 2
    await fake_discord.click(ALICE, request["id"], buttons(request)[0]["custom_id"])
    await bot.until_said(thread, "Finished")
    settled = fake_discord.messages[int(request["id"])]
    assert settled["content"].startswith("✅ Approved") and not settled["components"]
    assert len(fake_discord.webhooks) == 2  # #general's, reused after the restart, and #random's
    assert [m["content"] for m in fake_discord.posts_in(OTHER_CHANNEL_ID)] == ["Release 2.0 is out!"]


async def test_approve_by_reply_after_a_restart(bot: Bot, fake_discord: FakeDiscord) -> None:
    thread, request = await announce_until_pending(bot)
    await bot.restart()
    await fake_discord.say(ALICE, thread["id"], "approve")
    await bot.until_said(thread, "Finished")
    assert fake_discord.messages[int(request["id"])]["content"].startswith("✅ Approved")


async def test_a_reply_in_a_thread_archived_before_a_restart_reaches_the_run(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    await bot.start(INTERVIEW, model=ScriptedModel(["Budget?", "Noted. DONE"]))
    thread = await bot.summon("interview", "plan the offsite")
    await bot.until_said(thread, "waiting for you")
    await bot.stop()
    # Archived while the bot was away, so the new process has never seen the thread.
    fake_discord.channels[int(thread["id"])]["thread_metadata"]["archived"] = True
    await bot.start()
    await fake_discord.say(ALICE, thread["id"], "10k")
    await bot.until_said(thread, "Finished")
    assert fake_discord.calls_to("GET", rf"/channels/{thread['id']}")
    assert "10k" in [m.content for m in bot.model.requests[1].messages]


async def test_a_429_on_a_webhook_post_is_retried_in_order(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    await bot.start(DEBATE, model=ScriptedModel(["One.", "Two.", "FINAL ANSWER: three."]))
    fake_discord.fail("POST", r"/webhooks/\d+/[^/]+", times=3, retry_after=0.05)
    thread = await bot.summon("debate", "count to three")
    await bot.until_said(thread, "Finished")
    assert [t for _, t in bot.agents_said(thread)] == ["One.", "Two.", "FINAL ANSWER: three."]
    assert len(fake_discord.calls_to("POST", r"/webhooks/\d+/[^/]+", status=429)) == 3


async def test_a_long_reply_is_split_under_the_same_persona(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    long = "\n\n".join(f"Point {i}. " + "Detail " * 120 for i in range(6))
    assert len(long) > 4000
    await bot.start(DEBATE, model=ScriptedModel([long, "Short.", "FINAL ANSWER: ok."]))
    thread = await bot.summon("debate", "be thorough")
    await bot.until_said(thread, "Finished")
    said = bot.agents_said(thread)
    bull = [t for who, t in said if who == "🐂 Bull"]
    assert len(bull) >= 3 and all(len(t) <= 2000 for t in bull)
    assert " ".join(bull).split() == long.split()
    assert said[len(bull):] == [("Bear", "Short."), ("Synthesis", "FINAL ANSWER: ok.")]


async def test_without_manage_webhooks_the_bot_posts_with_names_in_bold(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    fake_discord.manage_webhooks = False
    await bot.start(DEBATE, model=ScriptedModel(
        ["Up.", "Down.", "FINAL ANSWER: flat.", "Again up.", "Again down.", "FINAL ANSWER: ok."]))
    for topic in ("first", "second"):
        thread = await bot.summon("debate", topic)
        await bot.until_said(thread, "Finished")
    first, second = fake_discord.threads()
    texts = [t for _, t in bot.said(first)]
    assert sum("Manage Webhooks" in t for t in texts) == 1
    assert ["**Bull**: Up." in t for t in texts].count(True) == 1
    assert "🐂 **Bull**: Up." in texts and "**Synthesis**: FINAL ANSWER: flat." in texts
    # Said once per channel, not once per run.
    assert not any("Manage Webhooks" in t for _, t in bot.said(second))
    assert not fake_discord.webhooks
    assert all(m["author"]["id"] == str(BOT_ID) for m in fake_discord.posts_in(first["id"]))


async def test_an_approved_post_never_reaches_another_server(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    # The bot is in a second server too; the model names a channel there by its id.
    elsewhere = ("post_message", json.dumps({"channel": f"<#{FOREIGN_CHANNEL_ID}>",
                                             "text": "Release 2.0 is out!"}))
    thread, request = await announce_until_pending(bot, call=elsewhere)
    await fake_discord.click(ALICE, request["id"], buttons(request)[0]["custom_id"])
    await bot.until_said(thread, "Finished")
    assert not fake_discord.posts_in(FOREIGN_CHANNEL_ID)
    assert not fake_discord.calls_to("POST", rf"/channels/{FOREIGN_CHANNEL_ID}/webhooks")
    assert [w["channel_id"] for w in fake_discord.webhooks.values()] == [str(CHANNEL_ID)]
    told = [m.content for m in bot.model.requests[1].messages]
    assert any("not in this server" in str(t) for t in told), told


async def test_a_lookalike_role_grants_nothing(
        bot: Bot, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    # Mallory may manage roles: she makes her own "Moderators" and gives it to herself.
    await fake_discord.add_role("Moderators", MALLORY)
    thread, request = await announce_until_pending(bot, approvers='["role:Moderators"]')
    await fake_discord.say(MALLORY, thread["id"], "approve")
    refusal = await wait_until(lambda: [m for m in fake_discord.posts_in(thread["id"])
                                        if m.get("message_reference")], what="a refusal")
    assert "only members of Moderators" in refusal[0]["content"]
    pressed = await fake_discord.click(MALLORY, request["id"], buttons(request)[0]["custom_id"])
    [answer] = await wait_until(lambda: fake_discord.responses(pressed))
    assert answer["data"]["flags"] & 64 and "only" in answer["data"]["content"]
    await bot.host.idle()
    assert buttons(fake_discord.messages[int(request["id"])])  # still pending
    assert not fake_discord.posts_in(OTHER_CHANNEL_ID)
    assert "2 roles are named 'Moderators'" in caplog.text and "role:<id>" in caplog.text


async def test_a_role_named_by_id_still_works_beside_a_lookalike(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    await fake_discord.add_role("Moderators", MALLORY)
    thread, request = await announce_until_pending(
        bot, approvers=f'["role:{MODERATORS_ROLE_ID}"]')
    await fake_discord.click(CAROL, request["id"], buttons(request)[0]["custom_id"])
    await bot.until_said(thread, "Finished")
    assert fake_discord.messages[int(request["id"])]["content"].startswith(f"✅ Approved by <@{CAROL}>")
    assert [m["content"] for m in fake_discord.posts_in(OTHER_CHANNEL_ID)] == ["Release 2.0 is out!"]


async def test_no_webhook_token_is_stored_and_a_restart_reuses_the_webhook(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    await bot.start(DEBATE, model=ScriptedModel(
        ["Up.", "Down.", "FINAL ANSWER: flat.", "Up again.", "Down again.", "FINAL ANSWER: ok."]))
    first = await bot.summon("debate", "first")
    await bot.until_said(first, "Finished")
    [hook] = fake_discord.webhooks.values()
    # Whoever reads the store (a backup, a copied file) gets no token to post as the bot.
    assert hook["token"].encode() not in store_bytes(Path(bot.db))
    await bot.restart()
    second = await bot.summon("debate", "second")
    await bot.until_said(second, "Finished")
    assert len(fake_discord.webhooks) == 1  # asked Discord for it again, made none
    agents = [p for p in fake_discord.posts_in(second["id"]) if p.get("webhook_id")]
    assert len(agents) == 3 and {p["webhook_id"] for p in agents} == {hook["id"]}
    assert hook["token"].encode() not in store_bytes(Path(bot.db))
