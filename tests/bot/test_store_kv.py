"""The store's small key-value space: what adapters remember, and a platform's inbox."""

from __future__ import annotations


async def test_values_are_kept_listed_and_forgotten_per_namespace(store) -> None:
    await store.kv_set("inbox:slack", "Ev1", "first")
    await store.kv_set("inbox:slack", "Ev2", "second")
    await store.kv_set("inbox:discord", "Ev1", "elsewhere")
    assert await store.kv_items("inbox:slack") == {"Ev1": "first", "Ev2": "second"}

    await store.kv_delete("inbox:slack", "Ev1")
    await store.kv_delete("inbox:slack", "never-there")  # forgetting nothing is no error
    assert await store.kv_items("inbox:slack") == {"Ev2": "second"}
    assert await store.kv_get("inbox:slack", "Ev1") is None
    assert await store.kv_items("inbox:discord") == {"Ev1": "elsewhere"}
    assert await store.kv_items("nothing-here") == {}


async def test_an_inbox_hands_back_what_was_kept_oldest_first_once_old_enough(store) -> None:
    from threadteam.bot.inbox import Inbox
    from threadteam.bot.shapes import Inbound, ThreadKey

    key = ThreadKey("slack", "T1", "C1", "1.0")
    inbox = Inbox(store, "slack")
    for n in range(5):
        await inbox.keep(Inbound(key=key, user="U1", text=f"reply {n} \ud800", kind="reply",
                                 event_id=f"Ev{n}", roles=("R1",), sent_at=1.5))
    await inbox.done("Ev2")
    left = await inbox.left()
    # As written (a lone surrogate too: the run's log replaces it when the host takes it).
    assert [k.inbound.text for k in left] == [f"reply {n} \ud800" for n in (0, 1, 3, 4)]
    assert left[0].inbound.key == key and left[0].inbound.roles == ("R1",)
    assert await inbox.left(older_than=60) == []  # a live process may still be handing them over
    await store.kv_set("inbox:slack", "junk", "{not json")  # another version's entry: left alone
    assert len(await inbox.left()) == 4
