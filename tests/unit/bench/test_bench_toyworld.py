"""The toy-world bench's reference capture and scoring, on tiny models and rendered scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench import toyworld as T
from lib_ext.toyworld import scenes
from lib_ext.toyworld.model import ToyConfig, ToyTextEncoder, ToyUNet
from lib_ext.toyworld.tokenizer import ToyTokenizer


def _tiny_model() -> T.ToyModel:
    torch.manual_seed(0)
    tok = ToyTokenizer()
    cfg = ToyConfig(
        vocab_size=tok.vocab_size, text_dim=16, channels=(8, 16, 16), attn_heads=(1, 2, 2), time_dim=32, groups=4
    )
    return T.ToyModel(ToyTextEncoder(cfg).eval(), ToyUNet(cfg).eval(), tok, "tiny", None, None)


def test_capture_equals_the_models_own_attention_probabilities(one_thread):
    model = _tiny_model()
    attn2 = [m for n, m in model.unet.named_modules() if n.endswith("attn2")]
    for m in attn2:
        m.store_probs = True
    cond = model.encode(["a red circle", "a blue square and a green triangle"])
    ctx = torch.cat([cond, model.encode(["", ""])])
    capture = T.ReferenceCapture(model.unet, n_cond_rows=2)
    with torch.no_grad():
        model.unet(torch.randn(4, 3, 32, 32), torch.tensor([500.0] * 4), ctx)
    capture.remove()
    expected = 0
    for m in attn2:
        probs = m.last_probs[:2].sum(dim=1)  # conditional rows, summed over heads: (2, n, 77)
        side = int(probs.shape[1] ** 0.5)
        grid = probs.transpose(1, 2).reshape(2, 77, side, side)
        expected = expected + F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)
    assert capture.calls == len(attn2) == capture.n_layers
    assert torch.allclose(capture.maps, expected, atol=1e-5)
    # Hooks are gone after remove(): another forward adds nothing.
    with torch.no_grad():
        model.unet(torch.randn(4, 3, 32, 32), torch.tensor([500.0] * 4), ctx)
    assert capture.calls == len(attn2)


class _OneAttention(torch.nn.Module):
    """A module tree with one attn2 whose queries are the input pixels' features, keys the context."""

    def __init__(self):
        super().__init__()
        self.attn2 = torch.nn.Module()
        self.attn2.heads = 1
        self.attn2.to_q = torch.nn.Linear(2, 2, bias=False)
        self.attn2.to_k = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.attn2.to_q.weight.copy_(torch.eye(2))
            self.attn2.to_k.weight.copy_(torch.eye(2))

    def forward(self, x, context):
        return self.attn2.to_q(x), self.attn2.to_k(context)


def test_capture_orientation_row_major_rows_are_y():
    net = _OneAttention()
    grid = torch.zeros(1, 4, 4, 2)
    grid[0, 1, 3, 0] = 8.0  # pixel at row (y) 1, column (x) 3 of a 4×4 map
    x = grid.view(1, 16, 2)  # row-major flatten, as SpatialTransformer does
    context = torch.zeros(1, 6, 2)
    context[0, 5, 0] = 8.0  # token 5 matches that pixel's query
    capture = T.ReferenceCapture(net, n_cond_rows=1)
    net(x, context)
    heat = capture.maps[0, 5]
    ys, xs = np.unravel_index(int(heat.argmax()), heat.shape)
    assert 8 <= ys < 16 and 24 <= xs < 32


def test_capture_uses_only_the_conditional_rows():
    net = _OneAttention()
    x = torch.randn(3, 16, 2)
    context = torch.randn(3, 6, 2)
    a = T.ReferenceCapture(net, n_cond_rows=1)
    net(x, context)
    a.remove()
    b = T.ReferenceCapture(net, n_cond_rows=1)
    net(x[:1], context[:1])
    b.remove()
    assert a.maps.shape[0] == 1 and torch.allclose(a.maps, b.maps)


def test_phrases_and_heat_mask():
    ps = T.phrases("a red circle and a blue square")
    assert [(p.color, p.color_word, p.shape, p.shape_word) for p in ps] == [
        ("red", 1, "circle", 2),
        ("blue", 5, "square", 6),
    ]
    heat = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    assert T.heat_mask(heat).tolist() == [[False, False], [True, True]]  # > 0.4 of the max
    assert not T.heat_mask(torch.zeros(2, 2)).any()


def test_scores_are_perfect_for_ground_truth_maps_and_chance_is_area():
    scene = scenes.render([("circle", "red", 9.0, 9.0, 12.0), ("square", "blue", 23.0, 22.0, 11.0)])
    maps = torch.zeros(77, 32, 32)
    for word_index, _word, mask in scene.word_masks:
        maps[word_index + 1] = torch.from_numpy(mask.astype(np.float32))
    scores = T.Scores()
    scores.add(scene.caption, scene.image, maps)
    summary = scores.summary()
    assert summary["caption_accuracy"] == 1.0
    assert summary["reference_miou"] == pytest.approx(1.0, abs=0.02)
    areas = [o.mask.sum() / 1024 for o in scene.objects]
    assert summary["chance_miou"] == pytest.approx(np.mean(areas), abs=0.01)
    assert summary["other_object_miou"] == 0.0
    assert summary["words_scored"] == summary["words_asked"] == 4
    # Swapped maps (each object's words pointing at the other object) score 0, and the other-object IoU is 1.
    swapped = maps.clone()
    swapped[[2, 3, 6, 7]] = maps[[6, 7, 2, 3]]
    scores = T.Scores()
    scores.add(scene.caption, scene.image, swapped)
    assert scores.summary()["reference_miou"] == 0.0
    assert scores.summary()["other_object_miou"] == pytest.approx(1.0, abs=0.02)


def test_missing_objects_are_not_scored_but_counted_as_asked():
    scene = scenes.render([("circle", "red", 9.0, 9.0, 12.0)])
    scores = T.Scores()
    scores.add("a red circle and a green triangle", scene.image, torch.rand(77, 32, 32))
    s = scores.summary()
    assert s["caption_accuracy"] == 0.0 and s["words_scored"] == 2 and s["words_asked"] == 4


def test_evaluate_and_timing_run_end_to_end_on_a_tiny_model(one_thread):
    model = _tiny_model()
    result = T.evaluate(
        model, ["a red circle", "a blue square and a green triangle", "a yellow circle"], steps=2, batch=2
    )
    assert set(result) >= {"caption_accuracy", "reference_miou", "chance_miou", "other_object_miou"}
    assert 0.0 <= result["caption_accuracy"] <= 1.0
    assert result["words_asked"] == 8
    assert T.seconds_per_image(model, 1) > 0
    # Same seeds, same images.
    a = T.generate(model, ["a red circle"], [5], steps=2)
    b = T.generate(model, ["a red circle"], [5], steps=2)
    assert torch.equal(a, b)


def test_bench_captions_are_fixed_one_and_two_object_captions():
    caps = T.bench_captions(50)
    assert caps == T.bench_captions(50)
    counts = {len(T.phrases(c)) for c in caps}
    assert counts == {1, 2}


def test_train_minutes_from_metadata_or_model_card(tmp_path):
    w = tmp_path / "toy.safetensors"
    assert T._train_minutes({"train": json.dumps({"minutes": 97.5})}, w) == 97.5
    assert T._train_minutes({}, w) is None
    (tmp_path / "MODEL_CARD.md").write_text("Trained for 88.2 min on 2 cores.\n")
    assert T._train_minutes({}, w) == 88.2


def test_teacher_forced_miou_runs_and_reports_chance(one_thread):
    result = T.teacher_forced_miou(_tiny_model(), n_scenes=3, timesteps=(500,))
    assert 0.0 <= result["teacher_forced_miou"] <= 1.0
    assert 0.0 < result["teacher_forced_chance_miou"] < 0.3  # objects cover a small part of the image
