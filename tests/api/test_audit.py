"""Responder actions land in the hash chain; admins list their own and verify the chain, and
learn nothing of another organisation's activity (no global seq, gap, count or position)."""

from __future__ import annotations

from sqlalchemy import select, update

from core.db import transaction
from core.models import AuditEntry
from tests.api.conftest import Desk, Org


async def test_it_records_actions_and_lists_only_the_own_organisation(desk: Desk) -> None:
    assert desk.a.alert is not None and desk.b.alert is not None
    async with await desk.client(desk.b, "responder") as c:
        await c.post(f"/api/v1/alerts/{desk.b.alert.id}/acknowledge")
    async with await desk.client(desk.a, "admin") as c:
        await c.get(f"/api/v1/alerts/{desk.a.alert.id}")
        await c.post(f"/api/v1/alerts/{desk.a.alert.id}/acknowledge")
        await c.patch(
            f"/api/v1/responders/{desk.a.responders['observer'].id}", json={"role": "responder"}
        )
        entries = (await c.get("/api/v1/audit", params={"limit": 2})).json()
        rest = (await c.get("/api/v1/audit", params={"before_seq": entries["next_cursor"]})).json()
        verdict = (await c.get("/api/v1/audit/verify")).json()
    actions = [e["action"] for e in entries["items"] + rest["items"]]
    assert actions[:3] == ["responder.role", "alert.acknowledge", "alert.view"]
    assert "org.create" in actions
    assert all(desk.b.alert.id.hex not in str(e) for e in entries["items"] + rest["items"])
    assert verdict == {"ok": True, "first_bad_seq": None}


async def global_seqs(desk: Desk, org: Org) -> list[int]:
    async with desk.sessions() as s:
        query = select(AuditEntry.seq).where(AuditEntry.org_id == org.org.id)
        return list((await s.execute(query.order_by(AuditEntry.seq))).scalars())


async def interleave(desk: Desk) -> None:
    """Both organisations' actions, taking turns in the global chain."""
    assert desk.a.alert is not None and desk.b.alert is not None
    async with (
        await desk.client(desk.a, "responder") as a,
        await desk.client(desk.b, "responder") as b,
    ):
        for _ in range(3):
            assert (await a.get(f"/api/v1/alerts/{desk.a.alert.id}")).status_code == 200
            assert (await b.get(f"/api/v1/alerts/{desk.b.alert.id}")).status_code == 200
            assert (await b.get(f"/api/v1/alerts/{desk.b.alert.id}")).status_code == 200


async def test_an_organisation_numbers_its_own_entries_without_the_others_gaps(
    desk: Desk,
) -> None:
    await interleave(desk)
    own = await global_seqs(desk, desk.a)
    assert own != list(range(own[0], own[0] + len(own)))  # the global chain has gaps here
    async with await desk.client(desk.a, "admin") as c:
        pages, cursor = [], None
        while True:
            params = {"limit": 3} | ({} if cursor is None else {"before_seq": cursor})
            page = (await c.get("/api/v1/audit", params=params)).json()
            pages.append([e["seq"] for e in page["items"]])
            if (cursor := page["next_cursor"]) is None:
                break
    # Its own entries, numbered 1..n with no gaps, newest first: nothing of the others' count.
    assert [n for page in pages for n in page] == list(range(len(own), 0, -1))
    assert pages[0] == [len(own), len(own) - 1, len(own) - 2] and len(pages) > 1


async def alter(desk: Desk, seq: int) -> None:
    async with transaction(desk.sessions) as s:
        await s.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(action="edited"))


async def verdicts(desk: Desk) -> tuple[object, object]:
    async with (
        await desk.client(desk.a, "admin") as a,
        await desk.client(desk.b, "admin") as b,
    ):
        return (await a.get("/api/v1/audit/verify")).json(), (
            await b.get("/api/v1/audit/verify")
        ).json()


async def test_verifying_names_only_the_own_entries_by_their_own_numbers(desk: Desk) -> None:
    await interleave(desk)
    [_first, second, *_] = await global_seqs(desk, desk.a)
    assert second > 2  # bravo's entries come before alpha's second one in the global chain
    assert await verdicts(desk) == ({"ok": True, "first_bad_seq": None},) * 2
    await alter(desk, second)
    alpha, bravo = await verdicts(desk)
    assert alpha == {"ok": False, "first_bad_seq": 2}  # its own second entry, not the global seq
    assert bravo == {"ok": False, "first_bad_seq": None}  # broken, but not where: not its own


async def test_another_organisations_broken_entry_is_not_located_for_it(desk: Desk) -> None:
    [bravos_first] = await global_seqs(desk, desk.b)  # bravo's org.create, global seq 2
    await alter(desk, bravos_first)
    alpha, bravo = await verdicts(desk)
    assert alpha == {"ok": False, "first_bad_seq": None}
    assert bravo == {"ok": False, "first_bad_seq": 1}


async def test_a_deleted_entry_breaks_the_chain_without_a_position(desk: Desk) -> None:
    await interleave(desk)
    [_first, second, *_] = await global_seqs(desk, desk.a)
    async with transaction(desk.sessions) as s:
        entry = await s.get(AuditEntry, second)
        assert entry is not None
        await s.delete(entry)
    alpha, bravo = await verdicts(desk)
    assert alpha == bravo == {"ok": False, "first_bad_seq": None}  # nobody's to show
