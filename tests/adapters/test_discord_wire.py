"""The Discord adapter on the wire: real discord.py against the fake, with a recording host.

These pin what the adapter itself owes Discord (translation in, posting out,
429s, splitting, the webhook fallback); the end-to-end runs with the real host
are in test_discord.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fakes.discord import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL_ID,
    GUILD_ID,
    MALLORY,
    MODERATORS_ROLE_ID,
    OTHER_BOT,
    FakeDiscord,
    wait_until,
)
from threadteam.adapters.discord import DiscordAdapter
from threadteam.bot.errors import PlatformError
from threadteam.bot.memory import StoreMemory
from threadteam.bot.retry import RetryPolicy
from threadteam.bot.shapes import (
    BOT_PERSONA,
    ApprovalPrompt,
    Handled,
    Inbound,
    Memory,
    Outbound,
    ThreadKey,
)
from threadteam.bot.stores import SQLiteStore
from threadteam.teams.persona import Persona

BEAR = Persona("Bear", ":bear:")
BULL = Persona("Bull", "https://example.com/bull.png")


@dataclass
class RecordingHost:
    """Just enough of the host for the adapter: records what it is handed."""

    seen: list[Inbound] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)
    refuse: str | None = None

    async def handle(self, event: Inbound) -> Handled:
        self.seen.append(event)
        if event.kind == "summon":
            self.runs.add(str(event.key))
        return Handled(self.refuse if event.kind in ("button", "reply") else None)

    async def thread_status(self, key: ThreadKey) -> str | None:
        return "running" if str(key) in self.runs else None

    async def open_threads(self) -> list[ThreadKey]:
        return [e.key for e in reversed(self.seen) if e.kind == "summon"]

    def check_summon(self, text: str) -> str | None:
        team, _, task = text.partition(" ")
        if team not in ("debate", "triage"):
            return "Unknown team. Teams: debate, triage."
        return None if task.strip() else "Usage: <team> <task>"

    def team_choices(self) -> list[tuple[str, str]]:
        return [("debate", "Bull and bear argue"), ("triage", "Support desk")]


def seen(fake: FakeDiscord) -> list[tuple[str, str]]:
    """(who, text) of every message in #general, as a person sees them."""
    return [(m["author"]["username"], m["content"]) for m in fake.posts_in(CHANNEL_ID)]


# The platform retry policy with its backoff shortened, so a test of giving up is quick.
QUICK = RetryPolicy(first_backoff=0.01, max_backoff=0.02)


async def started(fake: FakeDiscord, host: RecordingHost, memory: Memory | None = None
                  ) -> DiscordAdapter:
    adapter = DiscordAdapter(fake.token, api_base=fake.url, memory=memory, retry=QUICK)
    await adapter.start(host, within=10)
    return adapter


@pytest.fixture
async def wired(fake_discord: FakeDiscord, sqlite_store: SQLiteStore):
    host = RecordingHost()
    adapter = await started(fake_discord, host, StoreMemory(sqlite_store, "discord"))
    yield adapter, host
    await adapter.aclose()


def key_for(thread_id: int | str) -> ThreadKey:
    return ThreadKey("discord", str(GUILD_ID), str(CHANNEL_ID), str(thread_id))


async def test_connects_with_the_intents_and_syncs_team(fake_discord: FakeDiscord, wired) -> None:
    identify = fake_discord.identifies[0]
    assert identify["intents"] & (1 << 0)  # guilds
    assert identify["intents"] & (1 << 9)  # guild messages
    assert identify["intents"] & (1 << 15)  # message content
    [team] = fake_discord.commands
    assert team["name"] == "team"
    assert [o["name"] for o in team["options"]] == ["team", "task"]
    assert team["options"][0].get("autocomplete") is True


async def test_slash_summon_answers_then_opens_a_thread(fake_discord: FakeDiscord, wired) -> None:
    _, host = wired
    token = await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate",
                                     task="Should we adopt Rust for the billing service?")
    await wait_until(lambda: host.seen, what="the summon")
    [response] = fake_discord.responses(token)
    assert response["type"] == 4 and "debate" in response["data"]["content"]
    [thread] = fake_discord.threads()
    assert thread["name"] == "Should we adopt Rust for the billing service?"
    [summon] = host.seen
    assert summon.kind == "summon"
    assert summon.text == "debate Should we adopt Rust for the billing service?"
    assert summon.key == key_for(thread["id"])
    assert summon.user == str(ALICE) and summon.display_name == "Alice"


async def test_slash_with_unknown_team_is_answered_only_to_the_person(
        fake_discord: FakeDiscord, wired) -> None:
    _, host = wired
    token = await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="nope", task="x")
    await wait_until(lambda: fake_discord.responses(token))
    [response] = fake_discord.responses(token)
    assert response["type"] == 4 and response["data"]["flags"] & 64
    assert "Unknown team" in response["data"]["content"]
    assert not fake_discord.threads() and not host.seen


async def test_autocomplete_offers_the_teams(fake_discord: FakeDiscord, wired) -> None:
    token = await fake_discord.autocomplete(ALICE, CHANNEL_ID, "team", "team", team="tri", task="")
    await wait_until(lambda: fake_discord.responses(token))
    [response] = fake_discord.responses(token)
    assert response["type"] == 8
    assert [c["value"] for c in response["data"]["choices"]] == ["triage"]


async def test_mention_opens_a_thread_from_the_message(fake_discord: FakeDiscord, wired) -> None:
    _, host = wired
    msg = await fake_discord.say(ALICE, CHANNEL_ID, "debate is remote work here to stay?",
                                 mention_bot=True)
    await wait_until(lambda: host.seen)
    [thread] = fake_discord.threads()
    assert thread["id"] == msg["id"] and thread["name"] == "is remote work here to stay?"
    assert host.seen[0].kind == "summon" and host.seen[0].text == "debate is remote work here to stay?"


async def test_bad_mention_gets_a_reply_naming_the_person(fake_discord: FakeDiscord, wired) -> None:
    await fake_discord.say(ALICE, CHANNEL_ID, "chess please", mention_bot=True)
    [call] = await wait_until(lambda: fake_discord.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages"))
    assert "Unknown team" in call.body["content"]
    assert call.body["message_reference"] and call.body["allowed_mentions"]["replied_user"]


async def test_replies_in_a_run_thread_reach_the_host_in_order(
        fake_discord: FakeDiscord, wired) -> None:
    _, host = wired
    await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="tabs or spaces")
    [thread] = await wait_until(fake_discord.threads)
    await wait_until(lambda: host.seen)
    for i in range(5):
        await fake_discord.say(ALICE, thread["id"], f"point {i}")
    await fake_discord.say(OTHER_BOT, thread["id"], "beep")  # other bots are ignored
    await wait_until(lambda: len(host.seen) == 6, what="five replies")
    assert [e.text for e in host.seen[1:]] == [f"point {i}" for i in range(5)]
    assert all(e.kind == "reply" and e.key == key_for(thread["id"]) for e in host.seen[1:])


async def test_messages_in_a_thread_without_a_run_are_left_alone(
        fake_discord: FakeDiscord, wired) -> None:
    _, host = wired
    thread_id = fake_discord.next_id()
    fake_discord._new_thread(str(CHANNEL_ID), "chat", str(ALICE), tid=thread_id)
    await fake_discord.say(ALICE, thread_id, "just chatting")
    await fake_discord.say(ALICE, CHANNEL_ID, "hello channel")
    await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="sync point")
    await wait_until(lambda: host.seen)
    assert [e.kind for e in host.seen] == ["summon"]


async def test_webhook_posts_personas_in_the_thread_and_echoes_are_ignored(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, host = wired
    await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="cats or dogs")
    [thread] = await wait_until(fake_discord.threads)
    key = key_for(thread["id"])
    first = await adapter.poster.post(Outbound(key, "Cats, clearly.", "k1", BULL))
    await adapter.poster.post(Outbound(key, "Dogs, obviously.", "k2", BEAR))
    posts = [p for p in fake_discord.posts_in(thread["id"]) if p.get("webhook_id")]
    assert [(p["author"]["username"], p["content"]) for p in posts] == [
        ("Bull", "Cats, clearly."), ("🐻 Bear", "Dogs, obviously.")]
    assert posts[0]["avatar_url"] == "https://example.com/bull.png" and first == posts[0]["id"]
    # One webhook for the channel, created once and then reused.
    assert len(fake_discord.calls_to("POST", rf"/channels/{CHANNEL_ID}/webhooks")) == 1
    executes = fake_discord.calls_to("POST", r"/webhooks/\d+/[^/]+")
    assert all(c.query["thread_id"] == thread["id"] and c.query["wait"] for c in executes)
    # Discord echoed both posts back as MESSAGE_CREATE with webhook_id; none reached the host.
    await fake_discord.say(ALICE, thread["id"], "sync")
    await wait_until(lambda: len(host.seen) == 2)
    assert [e.text for e in host.seen] == ["debate cats or dogs", "sync"]


def store_bytes(path: Path) -> bytes:
    """Everything the SQLite store holds on disk: the database, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


async def test_the_webhook_is_asked_for_again_after_a_restart_and_its_token_never_stored(
        fake_discord: FakeDiscord, sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    host = RecordingHost()
    key = key_for(CHANNEL_ID)
    for text in ("before", "after the restart"):
        adapter = await started(fake_discord, host, StoreMemory(sqlite_store, "discord"))
        await adapter.poster.post(Outbound(key, text, "k", BEAR))
        await adapter.aclose()
    [hook] = fake_discord.webhooks.values()
    assert [(p["webhook_id"], p["content"]) for p in fake_discord.posts_in(CHANNEL_ID)] == [
        (hook["id"], "before"), (hook["id"], "after the restart")]
    assert len(fake_discord.calls_to("POST", rf"/channels/{CHANNEL_ID}/webhooks")) == 1
    assert len(fake_discord.calls_to("GET", rf"/channels/{CHANNEL_ID}/webhooks")) == 2
    # Only the id is kept; the token lived in each process's memory alone.
    assert await sqlite_store.kv_get("discord", f"webhook:{CHANNEL_ID}") == hook["id"]
    assert hook["token"].encode() not in store_bytes(tmp_path / "runs.sqlite3")


async def test_a_token_an_older_version_stored_is_dropped(
        fake_discord: FakeDiscord, sqlite_store: SQLiteStore) -> None:
    key = key_for(CHANNEL_ID)
    adapter = await started(fake_discord, RecordingHost(), StoreMemory(sqlite_store, "discord"))
    await adapter.poster.post(Outbound(key, "made the webhook", "k0", BEAR))
    await adapter.aclose()
    [hook] = fake_discord.webhooks.values()
    await sqlite_store.kv_set("discord", f"webhook:{CHANNEL_ID}", f"{hook['id']}:{hook['token']}")
    adapter = await started(fake_discord, RecordingHost(), StoreMemory(sqlite_store, "discord"))
    await adapter.poster.post(Outbound(key, "hello", "k1", BEAR))
    await adapter.aclose()
    assert await sqlite_store.kv_get("discord", f"webhook:{CHANNEL_ID}") == hook["id"]
    assert len(fake_discord.webhooks) == 1
    assert fake_discord.posts_in(CHANNEL_ID)[-1]["webhook_id"] == hook["id"]


async def test_a_deleted_webhook_is_replaced(fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    key = key_for(CHANNEL_ID)
    await adapter.poster.post(Outbound(key, "one", "k1", BEAR))
    fake_discord.webhooks.clear()  # a moderator deleted it
    await adapter.poster.post(Outbound(key, "two", "k2", BEAR))
    assert [p["content"] for p in fake_discord.posts_in(CHANNEL_ID)] == ["one", "two"]


async def test_429_on_a_webhook_post_is_waited_out_in_order(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    key = key_for(CHANNEL_ID)
    await adapter.poster.post(Outbound(key, "warm-up", "k0", BEAR))
    # More 429s in a row than discord.py's own five tries: the adapter keeps going.
    fake_discord.fail("POST", r"/webhooks/\d+/[^/]+", times=6, retry_after=0.02)
    await asyncio.gather(*(adapter.poster.post(Outbound(key, f"msg {i}", f"k{i}", BEAR))
                           for i in range(1, 4)))
    assert [p["content"] for p in fake_discord.posts_in(CHANNEL_ID)] == [
        "warm-up", "msg 1", "msg 2", "msg 3"]
    assert len(fake_discord.calls_to("POST", r"/webhooks/\d+/[^/]+", status=429)) == 6


async def test_429_on_a_webhook_edit_is_waited_out(fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    key = key_for(CHANNEL_ID)
    prompt = ApprovalPrompt("call_1", "post_message", {"channel": "#x"})
    mid = await adapter.poster.post(Outbound(key, "May I post?", "k1", BEAR, approval=prompt))
    fake_discord.fail("PATCH", r"/webhooks/\d+/[^/]+/messages/\d+", times=2, retry_after=0.02)
    await adapter.poster.edit(Outbound(key, "May I post?\nApproved by <@1>", "k1e", BEAR), mid)
    msg = fake_discord.messages[int(mid)]
    assert msg["content"].endswith("Approved by <@1>") and msg["components"] == []


async def test_long_text_is_split_at_paragraphs_under_one_persona(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    paragraphs = [f"Paragraph {i}: " + "word " * 150 for i in range(6)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 4000
    first = await adapter.poster.post(Outbound(key_for(CHANNEL_ID), text, "k", BEAR))
    posts = fake_discord.posts_in(CHANNEL_ID)
    assert len(posts) >= 3 and first == posts[0]["id"]
    assert all(len(p["content"]) <= 2000 for p in posts)
    assert {p["author"]["username"] for p in posts} == {"🐻 Bear"}
    assert " ".join(p["content"] for p in posts).split() == text.split()
    assert all(p["content"].startswith("Paragraph") for p in posts)


async def test_approval_buttons_are_posted_and_pressed(fake_discord: FakeDiscord, wired) -> None:
    adapter, host = wired
    await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="approve me")
    [thread] = await wait_until(fake_discord.threads)
    prompt = ApprovalPrompt("call_0_post_message", "post_message", {"channel": "#general"})
    mid = await adapter.poster.post(
        Outbound(key_for(thread["id"]), "Announcer wants to post", "k", BEAR, approval=prompt))
    buttons = fake_discord.messages[int(mid)]["components"][0]["components"]
    assert [b["custom_id"] for b in buttons] == [
        "tt:approve:call_0_post_message", "tt:approve_always:call_0_post_message",
        "tt:deny:call_0_post_message"]
    token = await fake_discord.click(CAROL, mid, "tt:approve:call_0_post_message")
    await wait_until(lambda: fake_discord.responses(token))
    assert fake_discord.responses(token) == [{"type": 6}]
    press = host.seen[-1]
    assert (press.kind, press.action, press.call_id) == ("button", "approve", "call_0_post_message")
    assert press.key == key_for(thread["id"]) and press.user == str(CAROL)
    assert {"Moderators", str(fake_discord.member_roles[CAROL][0])} <= set(press.roles)


async def test_refused_press_is_answered_ephemerally(fake_discord: FakeDiscord, wired) -> None:
    adapter, host = wired
    host.refuse = "Only the run's approvers can decide this."
    prompt = ApprovalPrompt("c1", "post_message", {})
    mid = await adapter.poster.post(Outbound(key_for(CHANNEL_ID), "ok?", "k", BEAR, approval=prompt))
    token = await fake_discord.click(MALLORY, mid, "tt:deny:c1")
    await wait_until(lambda: fake_discord.responses(token))
    [response] = fake_discord.responses(token)
    assert response["type"] == 4 and response["data"]["flags"] & 64
    assert response["data"]["content"] == "Only the run's approvers can decide this."


async def test_long_call_ids_survive_the_custom_id_limit(fake_discord: FakeDiscord, wired) -> None:
    adapter, host = wired
    call_id = "call_" + "x" * 120
    prompt = ApprovalPrompt(call_id, "post_message", {})
    mid = await adapter.poster.post(Outbound(key_for(CHANNEL_ID), "ok?", "k", BEAR, approval=prompt))
    custom_id = fake_discord.messages[int(mid)]["components"][0]["components"][0]["custom_id"]
    assert len(custom_id) <= 100
    await fake_discord.click(ALICE, mid, custom_id)
    await wait_until(lambda: host.seen)
    assert host.seen[-1].call_id == call_id


async def test_typing_shows_while_an_agent_works(fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    key = key_for(CHANNEL_ID)
    await adapter.poster.working(key, BEAR)
    await wait_until(lambda: fake_discord.calls_to("POST", rf"/channels/{CHANNEL_ID}/typing"))
    await adapter.poster.post(Outbound(key, "done thinking", "k", BEAR))
    assert adapter.poster.mention("42") == "<@42>"


async def test_without_manage_webhooks_posts_as_the_bot_and_says_so_once(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    fake_discord.manage_webhooks = False
    key = key_for(CHANNEL_ID)
    await adapter.poster.post(Outbound(key, "Cats.", "k1", BULL))
    await adapter.poster.post(Outbound(key, "Dogs.", "k2", BEAR))
    contents = [p["content"] for p in fake_discord.posts_in(CHANNEL_ID)]
    assert len(contents) == 3 and "Manage Webhooks" in contents[0]
    assert contents[1:] == ["**Bull**: Cats.", "🐻 **Bear**: Dogs."]
    assert not fake_discord.webhooks


async def test_a_global_429_on_a_bot_post_is_waited_out(fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    fake_discord.fail("POST", rf"/channels/{CHANNEL_ID}/messages", times=2, retry_after=0.02,
                      is_global=True)
    notice = Outbound(key_for(CHANNEL_ID), "Finished: done.", "k")  # the bot's own notice
    await adapter.poster.post(notice)
    assert [p["content"] for p in fake_discord.posts_in(CHANNEL_ID)] == ["Finished: done."]
    assert len(fake_discord.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages", status=429)) == 2


async def test_a_discord_that_stays_down_fails_the_post_after_five_retries(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    fake_discord.fail("POST", rf"/channels/{CHANNEL_ID}/messages", status=503, times=6)
    with pytest.raises(PlatformError) as failed:
        await adapter.poster.post(Outbound(key_for(CHANNEL_ID), "Finished: done.", "k"))
    # One try and five retries, then a sentence for the thread: Discord, and what to do.
    assert len(fake_discord.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages", status=503)) == 6
    message = str(failed.value)
    assert message.startswith("Discord ") and "try again" in message
    assert "127.0.0.1" not in message and "http" not in message and "injected" not in message
    assert not fake_discord.posts_in(CHANNEL_ID)


async def test_a_webhook_5xx_that_passes_is_retried_by_the_one_policy(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    key = key_for(CHANNEL_ID)
    await adapter.poster.post(Outbound(key, "warm-up", "k0", BEAR))
    # discord.py alone would sleep 1 s + 3 s on these before answering; the policy's
    # (shortened) backoff is the only wait.
    fake_discord.fail("POST", r"/webhooks/\d+/[^/]+", status=502, times=2)
    started_at = asyncio.get_running_loop().time()
    await adapter.poster.post(Outbound(key, "after the outage", "k1", BEAR))
    assert asyncio.get_running_loop().time() - started_at < 1.0
    assert [p["content"] for p in fake_discord.posts_in(CHANNEL_ID)] == ["warm-up", "after the outage"]
    assert len(fake_discord.calls_to("POST", r"/webhooks/\d+/[^/]+", status=502)) == 2


# What a model might write to ping a whole server: everyone, here, people and a role.
LOUD = f"@everyone look! <@{ALICE}> <@!{BOB}> <@&{MODERATORS_ROLE_ID}> @here"


def sends_and_edits(fake: FakeDiscord) -> list:
    return [c for c in fake.calls if c.method in ("POST", "PATCH") and c.body is not None
            and "content" in c.body and not c.path.startswith("/interactions")]


async def test_agent_posts_ping_nobody_whatever_the_model_wrote(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    key = key_for(CHANNEL_ID)
    await adapter.poster.post(Outbound(key, LOUD, "k1", BEAR))  # a turn
    await adapter.poster.post(Outbound(key, LOUD + "\n\n" + "word " * 500, "k2", BEAR))  # split
    prompt = ApprovalPrompt("c1", "post_message", {"text": LOUD})
    mid = await adapter.poster.post(Outbound(key, LOUD, "k3", BEAR, approval=prompt))
    await adapter.poster.edit(Outbound(key, f"Approved by <@{ALICE}>\n{LOUD}", "k3e", BEAR), mid)
    posts = fake_discord.posts_in(CHANNEL_ID)
    assert len(posts) == 4 and sum(LOUD in p["content"] for p in posts) == 3
    assert [p["pinged"] for p in posts] == [[], [], [], []]
    sent = sends_and_edits(fake_discord)
    assert len(sent) == 5  # four posts and the edit
    assert all(c.body["allowed_mentions"] == {"parse": []} for c in sent)


async def test_agent_posts_as_the_bot_ping_nobody_either(fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    fake_discord.manage_webhooks = False
    key = key_for(CHANNEL_ID)
    prompt = ApprovalPrompt("c1", "post_message", {"text": LOUD})
    mid = await adapter.poster.post(Outbound(key, LOUD, "k1", BEAR, approval=prompt))
    await adapter.poster.edit(Outbound(key, f"Denied by <@{ALICE}>\n{LOUD}", "k1e", BEAR), mid)
    [notice, post] = fake_discord.posts_in(CHANNEL_ID)  # "give me Manage Webhooks", the post
    assert post["content"].startswith("🐻 **Bear**: Denied by") and LOUD in post["content"]
    assert notice["pinged"] == [] and post["pinged"] == []
    assert all(c.body["allowed_mentions"] == {"parse": []} for c in sends_and_edits(fake_discord))


async def test_a_host_notice_pings_the_people_it_names_and_no_one_else(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    notice = Outbound(key_for(CHANNEL_ID), f"Your turn, <@{ALICE}>: {LOUD}", "k")
    await adapter.poster.post(notice)
    [post] = fake_discord.posts_in(CHANNEL_ID)
    assert post["pinged"] == [f"user:{ALICE}", f"user:{BOB}"]
    assert "everyone" not in post["pinged"] and f"role:{MODERATORS_ROLE_ID}" not in post["pinged"]


async def test_a_pathological_40000_character_turn_posts_without_stalling_the_bot(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, _ = wired
    text = " *a" * 13_333  # one of the shapes that froze the Slack formatter for seconds
    gaps: list[float] = []

    async def heartbeat() -> None:  # what every other run and ack would feel meanwhile
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0)
            gaps.append(loop.time() - before)

    beating = asyncio.create_task(heartbeat())
    try:
        await adapter.poster.post(Outbound(key_for(CHANNEL_ID), text, "k", BEAR))
    finally:
        beating.cancel()
    posts = fake_discord.posts_in(CHANNEL_ID)
    assert len(posts) == 21 and "".join(p["content"] for p in posts).split() == text.split()
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f}s"


@pytest.mark.parametrize("agent, status, times, says", [
    (False, 0, 6, "Discord is having trouble (no answer)"),  # the connection drops every time
    (False, 503, 6, "Discord is having trouble (HTTP 503)"),
    (True, 502, 6, "Discord is having trouble (HTTP 502)"),  # a webhook post
    (False, 400, 1, "Discord refused to post in the thread (HTTP 400, error 50035)"),
    (True, 403, 1, "check the bot's permissions"),
])
async def test_an_error_for_the_thread_names_discord_and_what_to_do_and_nothing_internal(
        fake_discord: FakeDiscord, wired, agent: bool, status: int, times: int, says: str) -> None:
    adapter, _ = wired
    key = key_for(CHANNEL_ID)
    if agent:
        await adapter.poster.post(Outbound(key, "warm-up: the webhook exists", "k0", BEAR))
    upstream = "Invalid Form Body at http://10.1.2.3:8080/internal/shard-7 (trace 5f2a)"
    fake_discord.fail("POST", r"/webhooks/\d+/[^/]+" if agent else rf"/channels/{CHANNEL_ID}/messages",
                      status=status, times=times, code=50035 if status == 400 else 0,
                      message=upstream)
    with pytest.raises(PlatformError) as failed:
        await adapter.poster.post(Outbound(key, "Finished: done.", "k", BEAR if agent else BOT_PERSONA))
    message = str(failed.value)
    assert message.startswith("Discord ") and says in message
    for internal in ("10.1.2.3", "127.0.0.1", fake_discord.url, "http", "Invalid Form Body",
                     "trace", "Traceback"):
        assert internal not in message
