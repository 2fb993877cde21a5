"""The rating view's queue (`BanditService.upcoming`): the tab's own order played ahead, so the page can load the
next images before the key press (issue 14, "rating at speed")."""

from __future__ import annotations

import pytest

from lib_ext.bandit.service import MAX_UPCOMING, BanditService


@pytest.fixture
def svc(tmp_path):
    with BanditService(tmp_path / "data", seed=0) as s:
        yield s


def _backlog(svc: BanditService, rounds: list[list[int]]) -> tuple[int, list[int], list[list[int]]]:
    """A session whose rounds hold images of the given arm indexes; (session, arm ids, image ids per round)."""
    sid = svc.create_session("s", {"steps": 2})["id"]
    arms = [svc.add_arm(sid, f"prompt {i}")["id"] for i in range(3)]
    ids = []
    for arm_indexes in rounds:
        rnd = svc.store.create_round(sid, "more_good", len(arm_indexes), False)
        ids.append([svc.store.add_image(sid, arms[a], rnd["id"], 7, "p", "", [], "/nowhere.png", "0" * 64)
                    for a in arm_indexes])  # fmt: skip
    return sid, arms, ids


def test_the_round_of_the_last_image_first_then_the_backlog_rule(svc):
    sid, arms, ids = _backlog(svc, [[0, 1, 2], [0, 0, 1], [2, 2, 2]])
    r1, r2, _r3 = ids
    got = [im["id"] for im in svc.upcoming(sid, n=3, after=r2[0])["images"]]
    assert got == [r2[1], r2[2], r2[0]]  # later in its round, then the round's earlier one (still pending)
    svc.rate(r2[0], "like")
    got = [im["id"] for im in svc.upcoming(sid, n=2, after=r2[0])["images"]]
    assert got == [r2[1], r2[2]]
    # start: that image first (rated or not), then on from it
    svc.rate(r1[1], "dislike")
    up = svc.upcoming(sid, n=3, start=r1[1])
    assert [im["id"] for im in up["images"]] == [r1[1], r1[2], r1[0]]
    assert up["images"][0]["rating"] == "dislike" and up["pending"] == 7
    # a finished round hands over to the backlog: the picked arm's newest pending image, then the rest of its round
    for i in (*r1, *r2):
        svc.rate(i, "skip")
    nxt = svc.upcoming(sid, n=MAX_UPCOMING, after=r2[2])["images"]
    assert sorted(im["id"] for im in nxt) == sorted(ids[2])


def test_every_pending_image_once_and_excluded_ones_never(svc):
    sid, _arms, ids = _backlog(svc, [[0, 1, 2, 0], [1, 1, 2, 2], [0, 2, 1, 0]])
    flat = [i for r in ids for i in r]
    up = svc.upcoming(sid, n=MAX_UPCOMING, exclude=[flat[3], flat[5]])
    got = [im["id"] for im in up["images"]]
    assert sorted(got) == sorted(set(flat) - {flat[3], flat[5]}) and len(got) == len(set(got))
    assert up["pending"] == 12 and all(im["arm_label"] == "" for im in up["images"])
    # each backlog pick is the newest pending image of some arm, and then its round is finished first
    first = got[0]
    arm = next(im["arm_id"] for im in up["images"] if im["id"] == first)
    newest = max(im["id"] for im in up["images"] if im["arm_id"] == arm)
    assert first == newest
    # per rater: another rater's ratings leave this one's queue as it was
    svc.rate(flat[0], "like", rater="bob")
    assert len(svc.upcoming(sid, n=MAX_UPCOMING)["images"]) == 12
    assert flat[0] not in [im["id"] for im in svc.upcoming(sid, "bob", MAX_UPCOMING)["images"]]


def test_bad_arguments_are_value_errors(svc):
    sid, _arms, ids = _backlog(svc, [[0]])
    other, _a, other_ids = _backlog(svc, [[1]])
    with pytest.raises(ValueError, match="n must be"):
        svc.upcoming(sid, n=0)
    with pytest.raises(ValueError, match="n must be"):
        svc.upcoming(sid, n=MAX_UPCOMING + 1)
    with pytest.raises(ValueError, match="another session"):
        svc.upcoming(sid, start=other_ids[0][0])
    with pytest.raises(ValueError, match="excluded"):
        svc.upcoming(sid, exclude=list(range(1, 300)))
    assert svc.upcoming(sid, n=1, after=ids[0][0])["images"][0]["id"] == ids[0][0]  # `after` itself may be pending
