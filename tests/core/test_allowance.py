"""``core.ratelimit.Allowance``: a chat's ingress allowance (R21), with bounded memory."""

from __future__ import annotations

from core.ratelimit import Allowance


def test_a_burst_then_the_pace_and_a_notice_once_in_a_while() -> None:
    allowance = Allowance(3, 60, told_every=600)  # 3 at once, then one a second
    assert [allowance.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert allowance.tell("a", 0.0) and not allowance.tell("a", 1.0)
    assert allowance.take("b", 0.0)  # another chat has its own
    assert allowance.take("a", 1.0) and not allowance.take("a", 1.0)
    assert not allowance.tell("a", 599.0) and allowance.tell("a", 600.0)
    assert [allowance.take("a", 1000.0) for _ in range(4)] == [True, True, True, False]


def test_it_remembers_at_most_so_many_chats_the_spent_ones_first() -> None:
    allowance = Allowance(2, 0.6, keys=100)  # 2 at once, then one in 100 s
    for _ in range(3):
        allowance.take("flood", 0.0)  # spent
    for i in range(200):
        assert allowance.take(i, 1.0 + i / 1000)  # newcomers, each with a whole allowance
    assert len(allowance._left) <= 100
    assert not allowance.take("flood", 1.2)  # still spent: not forgotten for newcomers
