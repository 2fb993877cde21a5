"""Raters: each rater's own ratings and undo, pooled and per-rater posteriors, what the session learns from,
agreement (Cohen's κ), disagreements, per-rater exports, and a two-rater simulation."""

import numpy as np
import pytest

from lib_ext.bandit.service import BanditService, cohen_kappa
from tests.unit.bandit.fakes import Clock, fake_generator


@pytest.fixture
def svc(tmp_path):
    s = BanditService(tmp_path / "db", clock=Clock(), seed=0, synchronous="NORMAL")
    yield s
    s.close()


def _round(svc, tmp_path, n=4, arms=("a cat", "a dog"), mode="uniform"):
    sess = svc.create_session("raters", mode=mode, round_size=n)
    ids = [svc.add_arm(sess["id"], p)["id"] for p in arms]
    res = svc.run_round(sess["id"], fake_generator(tmp_path / "out"), k=n)
    return sess["id"], ids, [i["id"] for i in res["images"]], res["round"]["id"]


def test_each_rater_rates_undoes_and_marks_their_own(svc, tmp_path):
    sid, _arms, imgs, rid = _round(svc, tmp_path)
    assert svc.rate(imgs[0], "like", rater=" ann ")["rater"] == "ann"  # surrounding spaces dropped
    svc.rate(imgs[0], "dislike", rater="bob")
    svc.rate(imgs[1], "like")  # the unnamed rater
    img = svc.get_image(imgs[0], rater="ann")
    assert img["rating"] == "like" and img["ratings"] == {"ann": "like", "bob": "dislike"}
    assert svc.get_image(imgs[0])["rating"] == "pending"  # the unnamed rater has not rated it
    assert [i["id"] for i in svc.images(sid, rating="disagree")] == [imgs[0]]
    assert [i["id"] for i in svc.images(sid, rating="like", rater="bob")] == []
    assert [i["id"] for i in svc.images(sid, rating="pending", rater="bob")] == imgs[1:]
    # undo takes the rater into account (one browser shared by two raters: the same client)
    assert svc.undo(sid, rater="bob") == [{"image_id": imgs[0], "value": "pending", "rater": "bob"}]
    assert svc.get_image(imgs[0])["ratings"] == {"ann": "like"}
    assert svc.mark_rest(rid, rater="ann")["image_ids"] == imgs[1:]
    assert svc.images(sid, rating="pending") == [svc.get_image(i) for i in (imgs[0], *imgs[2:])]
    assert [r["rater"] for r in svc.raters(sid)["raters"]] == ["", "ann"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, i: s.rate(i, "like", rater=5), "rater must be a string"),
        (lambda s, i: s.rate(i, "like", rater="pooled"), 'must not be "pooled"'),
        (lambda s, i: s.rate(i, "like", rater="x" * 101), "longer than 100"),
        (lambda s, i: s.rate(i, "like", rater="a\nb"), "control characters"),
        (lambda s, i: s.undo(1, rater=["a"]), "rater must be a string"),
        (lambda s, i: s.images(1, rating="argue"), "rating filter must be one of"),
        (lambda s, i: s.update_session(1, learn_from=3), "learn_from must be"),
        (lambda s, i: s.update_session(1, learn_from="a\x00"), "NUL"),
        (lambda s, i: s.stats(1, rater=7), "rater must be a string"),
    ],
)
def test_bad_raters_are_refused_with_the_field_named(svc, tmp_path, call, match):
    _sid, _arms, imgs, _rid = _round(svc, tmp_path, n=2)
    with pytest.raises(ValueError, match=match):
        call(svc, imgs[0])


def test_views_and_what_the_session_learns_from(svc, tmp_path):
    sid, (cat, dog), _imgs, _rid = _round(svc, tmp_path, n=8)
    for im in svc.images(sid):
        svc.rate(im["id"], "like" if im["arm_id"] == cat else "dislike", rater="ann")
        svc.rate(im["id"], "like" if im["arm_id"] == dog else "dislike", rater="bob")
    by = lambda st: {r["arm_id"]: r for r in st["arms"]}  # noqa: E731
    pooled = by(svc.stats(sid))
    assert svc.stats(sid)["view"] == "pooled" and svc.stats(sid)["learn_from"] == "pooled"
    assert pooled[cat]["likes"] == pooled[cat]["dislikes"] == 4  # liked by one, disliked by the other: one each
    ann = by(svc.stats(sid, rater="ann"))
    assert (ann[cat]["likes"], ann[cat]["dislikes"], ann[dog]["likes"]) == (4, 0, 0)
    assert ann[cat]["pending"] == 0 and by(svc.stats(sid, rater=""))[cat]["pending"] == 4
    # the session learns from ann: the verdict, the default views and Thompson sampling follow her taste
    s = svc.update_session(sid, learn_from="ann", mode="more_good")
    assert s["options"]["learn_from"] == "ann"
    st = svc.stats(sid)
    assert st["view"] == "ann" and st["stop"]["leader_arm_id"] == cat
    assert svc.stats(sid, rater="pooled")["view"] == "pooled"
    assert sum(j.arm_id == cat for j in svc.plan_round(sid, k=40)) >= 34
    svc.update_session(sid, learn_from="bob")
    assert svc.stats(sid)["stop"]["leader_arm_id"] == dog
    assert sum(j.arm_id == dog for j in svc.plan_round(sid, k=40)) >= 34
    hist = svc.history(sid)
    assert hist["view"] == "bob" and hist["rounds"][-1]["arms"][dog]["likes"] == 4
    assert svc.posterior_curves(sid, points=11, rater="ann")["view"] == "ann"
    # agreement: ann and bob disagree on every image
    info = svc.raters(sid)
    assert info["learn_from"] == "bob" and info["disagreements"] == 8
    (pair,) = info["agreement"]
    assert (pair["a"], pair["b"], pair["n"]) == ("ann", "bob", 8)
    assert pair["counts"] == {"both_like": 0, "a_only": 4, "b_only": 4, "both_dislike": 0}
    assert pair["kappa"] == pytest.approx(-1.0) and pair["observed"] == 0.0
    views = {a["arm_id"]: a["views"] for a in info["arms"]}
    assert views[cat]["ann"]["likes"] == 4 and views[cat]["bob"]["dislikes"] == 4
    assert views[cat]["pooled"]["likes"] == 4 and views[cat]["pooled"]["dislikes"] == 4
    assert views[cat]["ann"]["mean"] > 0.7 > 0.3 > views[cat]["bob"]["mean"]


def test_cohen_kappa_against_worked_values():
    # Wikipedia's worked example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no → p_o 0.7, p_e 0.5, κ 0.4
    k = cohen_kappa({"both_like": 20, "a_only": 5, "b_only": 10, "both_dislike": 15})
    assert k["observed"] == pytest.approx(0.7) and k["kappa"] == pytest.approx(0.4)
    assert cohen_kappa({"both_like": 5, "a_only": 0, "b_only": 0, "both_dislike": 5})["kappa"] == pytest.approx(1.0)
    assert cohen_kappa({"both_like": 3, "a_only": 0, "b_only": 0, "both_dislike": 0}) == {
        "observed": 1.0,
        "kappa": None,
    }
    assert cohen_kappa(dict.fromkeys(("both_like", "a_only", "b_only", "both_dislike"), 0))["kappa"] is None


def test_export_one_raters_likes_or_anyones(svc, tmp_path):
    sid, _arms, imgs, _rid = _round(svc, tmp_path, n=4)
    svc.rate(imgs[0], "like", rater="ann")
    svc.rate(imgs[1], "like", rater="bob")
    svc.rate(imgs[1], "dislike", rater="ann")
    svc.rate(imgs[2], "like")
    root = tmp_path / "exp"
    assert len(svc.export_dataset(sid, root, "all", "sks", "cat")["written"]) == 3  # anyone's likes
    assert len(svc.export_dataset(sid, root, "pooled", "sks", "cat", rater="pooled")["written"]) == 3
    ann = svc.export_dataset(sid, root, "ann", "sks", "cat", rater="ann")["written"]
    assert len(ann) == 1
    assert len(svc.export_dataset(sid, root, "unnamed", "sks", "cat", rater="")["written"]) == 1
    assert len(svc.export_negative(sid, root, "neg-ann", rater="ann")["written"]) == 1
    with pytest.raises(ValueError, match="rater must be a string"):
        svc.export_dataset(sid, root, "bad", "sks", "cat", rater=3)


def test_two_raters_with_different_tastes_are_each_recovered(tmp_path):
    """Simulated raters: ann likes arm 0 most, bob arm 2; both rate every image of a uniform sweep. Each rater's
    posterior mean recovers that rater's like-rate (within 4 posterior sd), the pooled one their average, and a
    session learning from one rater sends Thompson sampling to that rater's favourite."""
    rates = {"ann": (0.7, 0.3, 0.1), "bob": (0.1, 0.3, 0.7)}
    rng = np.random.default_rng(7)
    with BanditService(tmp_path / "db", clock=Clock(), seed=1, synchronous="NORMAL") as svc:
        sid = svc.create_session("two raters", mode="uniform", round_size=60, prior="uniform")["id"]
        arms = [svc.add_arm(sid, f"prompt {n}")["id"] for n in range(3)]
        gen = fake_generator(tmp_path / "out")
        for _ in range(5):
            for im in svc.run_round(sid, gen)["images"]:
                for rater, p in rates.items():
                    svc.rate(im["id"], "like" if rng.random() < p[arms.index(im["arm_id"])] else "dislike", rater=rater)
        views = {a["arm_id"]: a["views"] for a in svc.raters(sid)["arms"]}
        for n, arm in enumerate(arms):
            for rater, p in rates.items():
                v = views[arm][rater]
                sd = np.sqrt(v["mean"] * (1 - v["mean"]) / (v["likes"] + v["dislikes"] + 3))
                assert v["likes"] + v["dislikes"] == 100
                assert abs(v["mean"] - p[n]) < 4 * sd, (rater, n, v, p[n])
            pooled = views[arm]["pooled"]
            assert pooled["likes"] + pooled["dislikes"] == 200
            assert abs(pooled["mean"] - (rates["ann"][n] + rates["bob"][n]) / 2) < 0.1
        assert svc.raters(sid)["agreement"][0]["kappa"] < 0.2  # different tastes: little agreement beyond chance
        for rater, favourite in (("ann", arms[0]), ("bob", arms[2])):
            svc.update_session(sid, learn_from=rater, mode="more_good")
            plan = svc.plan_round(sid, k=60)
            assert sum(j.arm_id == favourite for j in plan) > 40, rater
            assert svc.stats(sid)["stop"]["leader_arm_id"] == favourite


def test_the_backlog_is_each_raters_own(svc, tmp_path):
    sid, _arms, images, _rid = _round(svc, tmp_path, n=4)
    for iid in images[:3]:
        svc.rate(iid, "like", rater="ann")
    image, pending = svc.next_to_rate(sid, rater="ann")
    assert image["id"] == images[3] and pending == 1
    image, pending = svc.next_to_rate(sid, rater="ben")
    assert image["id"] in images and pending == 4
    svc.rate(images[3], "dislike", rater="ann")
    assert svc.next_to_rate(sid, rater="ann") == (None, 0)
