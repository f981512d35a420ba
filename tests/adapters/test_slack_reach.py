"""Channel reach on Slack: an approved action posts only where its approver could post.

`SlackDirectory.reach(key, user, channel)` through the real slack_sdk against the fake
Slack's conversations.list / conversations.members: the channel's id for a member,
a `Refused` sentence for everyone and everything else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from tests.bot.helpers import ANNOUNCE
from tests.fakes.slack import (
    ALICE,
    BOB,
    BOT_TOKEN,
    BOT_USER,
    CHANNEL,
    DM_ALICE,
    MALLORY,
    OTHER_CHANNEL,
    PRIVATE_CHANNEL,
    TEAM,
    FakeSlack,
    wait_until,
)
from threadteam.adapters.slack import SlackApi, SlackDirectory
from threadteam.bot.errors import Refused
from threadteam.bot.shapes import ThreadKey
from threadteam.teams.models.scripted import reply

KEY = ThreadKey("slack", TEAM, CHANNEL, "1700000000.000001")


@pytest.fixture
async def directory(fake_slack: FakeSlack) -> AsyncIterator[SlackDirectory]:
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url, session=session)
        d = SlackDirectory(SlackApi(client))
        yield d
        d.cancel()


@pytest.mark.parametrize("named", [
    "#announcements", "announcements", "#Announcements", " #announcements ",
    f"<#{OTHER_CHANNEL}|announcements>", f"<#{OTHER_CHANNEL}>", OTHER_CHANNEL,
])
async def test_a_member_reaches_a_channel_however_it_is_named(directory, named) -> None:
    assert await directory.reach(KEY, ALICE, named) == OTHER_CHANNEL


async def test_a_private_channel_is_reached_by_its_members_only(directory) -> None:
    assert await directory.reach(KEY, BOB, "#leads") == PRIVATE_CHANNEL
    with pytest.raises(Refused, match=r"not a member of #leads"):
        await directory.reach(KEY, ALICE, PRIVATE_CHANNEL)


async def test_someone_who_is_not_in_the_channel_is_refused(directory) -> None:
    for named in ("#announcements", OTHER_CHANNEL, f"<#{OTHER_CHANNEL}|announcements>"):
        with pytest.raises(Refused) as refused:
            await directory.reach(KEY, MALLORY, named)
        assert str(refused.value).startswith(f"<@{MALLORY}> is not a member of #announcements")


@pytest.mark.parametrize("named", ["U0BOB", f"<@{BOB}>", "<@U0BOB|bob>", "@bob", "W0ENTERPRISE"])
async def test_a_person_is_not_a_channel(directory, fake_slack, named) -> None:
    with pytest.raises(Refused, match=r"is a person, not a channel"):
        await directory.reach(KEY, ALICE, named)
    assert fake_slack.calls_to("conversations.members") == []


async def test_a_direct_message_is_refused(directory) -> None:
    with pytest.raises(Refused, match=r"direct message"):
        await directory.reach(KEY, ALICE, DM_ALICE)


@pytest.mark.parametrize("named", [
    "#nope", "C0ELSEWHERE",  # an unknown name; another workspace's (or an unseen) channel
    "#old-news",  # archived
    "<!here>", "", "#",
])
async def test_what_this_workspace_has_no_channel_for_is_refused(directory, named) -> None:
    with pytest.raises(Refused) as refused:
        await directory.reach(KEY, ALICE, named)
    assert "in this workspace" in str(refused.value) or "not a channel" in str(refused.value)


async def test_members_and_channels_are_read_page_by_page_and_kept_a_minute(
        directory, fake_slack) -> None:
    fake_slack.page_size = 2
    fake_slack.channels[OTHER_CHANNEL]["members"] = ["U0A", "U0B", "U0C", "U0D", ALICE]
    assert await directory.reach(KEY, ALICE, "#announcements") == OTHER_CHANNEL  # page 3
    assert len(fake_slack.calls_to("conversations.members")) == 3
    assert len(fake_slack.calls_to("conversations.list")) == 2
    for _ in range(3):  # a burst: asked once
        assert await directory.reach(KEY, ALICE, OTHER_CHANNEL) == OTHER_CHANNEL
        with pytest.raises(Refused):
            await directory.reach(KEY, MALLORY, "#announcements")
    assert len(fake_slack.calls_to("conversations.members")) == 3
    assert len(fake_slack.calls_to("conversations.list")) == 2

    fake_slack.channels[OTHER_CHANNEL]["members"].append(MALLORY)  # joined: counts once asked
    directory.forget()
    assert await directory.reach(KEY, MALLORY, "#announcements") == OTHER_CHANNEL


async def test_when_slack_will_not_say_the_answer_is_no(directory, fake_slack, caplog) -> None:
    fake_slack.fail("conversations.members", "missing_scope")
    with pytest.raises(Refused, match=r"could not check who is in #announcements "
                                      r"\(Slack said missing_scope\)"):
        await directory.reach(KEY, ALICE, "#announcements")
    assert "missing_scope" in caplog.text and "Traceback" not in caplog.text
    # Not kept: once Slack answers, the member gets through.
    assert await directory.reach(KEY, ALICE, "#announcements") == OTHER_CHANNEL


# -- end to end: the approved post goes where the approver could post, or nowhere ------------------
def _steps(channel: str) -> tuple:
    return (reply("", ("post_message", json.dumps({"channel": channel, "text": "We ship."}))),
            "Done. DONE")


@pytest.mark.parametrize(("approver", "channel", "why"), [
    (MALLORY, "#announcements", "is not a member of #announcements"),  # not in the channel
    (ALICE, "U0BOB", "is a person, not a channel"),  # a DM by another name
    (ALICE, "C0ELSEWHERE", "not a channel of this workspace"),  # another workspace's id
])
async def test_an_approved_post_beyond_the_approvers_reach_is_refused_in_the_thread(
        stack_factory, approver, channel, why) -> None:
    s = await stack_factory("http", *_steps(channel),
                            teams={"announce": ANNOUNCE.format(approvers=f"[{approver}]")})
    ts = await s.fake.say(ALICE, f"<@{BOT_USER}> announce Friday")
    await wait_until(lambda: any("approve" in m["text"] for m in s.thread(ts)),
                     what="the approval request")
    await s.fake.say(approver, "approve", thread_ts=ts)
    thread = await s.finished(ts)
    await s.idle()
    said = [m["text"] for m in thread if why in m["text"]]
    assert said, [m["text"] for m in thread]
    posted = [c.params["channel"] for c in s.fake.calls_to("chat.postMessage")]
    assert set(posted) == {CHANNEL}  # the run's own thread, nowhere else
    assert why in str(s.model.requests[-1].messages)  # the model is told why, as the result
