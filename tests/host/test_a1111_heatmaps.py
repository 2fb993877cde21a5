"""Attention heatmaps wired into the v1.10.1 double: grids in the gallery, passes, errors, cleanliness."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from promptscope_webui import txt2img

TITLE = "PromptScope: Attention heatmaps"
GUIDANCE = "PromptScope: Semantic guidance"


def make_p(m, args: list[Any] | None = None, guidance: list[Any] | None = None, **kw) -> Any:
    kw.setdefault("prompt", "a red cat")
    kw.setdefault("negative_prompt", "blurry")
    kw.setdefault("seed", 5)
    scripts_args = {title: v for title, v in ((TITLE, args), (GUIDANCE, guidance)) if v is not None}
    return txt2img(m, scripts_args, **kw)


def hooks(sd_model) -> int:
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in sd_model.model.diffusion_model.modules())


def test_grid_per_image_is_added_to_the_gallery_with_words(webui, sd_model):
    p = make_p(webui, [True], batch_size=2)
    processed = webui.processing.process_images(p)
    grids = [t for t in processed.infotexts if t.startswith("Attention heatmaps")]
    assert len(grids) == 2
    assert len(processed.images) == 2 + 2
    assert processed.images[-1].size[0] >= 64
    assert hooks(sd_model) == 0


def test_missing_word_is_a_message_not_a_crash(webui, sd_model):
    p = make_p(webui, [True, "zebra, cat"])
    processed = webui.processing.process_images(p)
    words = {w.word: w for w in p.promptscope_heatmaps.by_image[(0, 0)]["first"].words}
    assert words["zebra"].heat is None and "zebra" in words["zebra"].message
    assert words["cat"].heat is not None
    assert len(processed.images) == 2  # the image and its grid (the missing word's tile says why)


def test_hires_pass_chosen_and_first_pass_kept_apart(webui, sd_model):
    kw = dict(enable_hr=True, hr_scale=2, hr_second_pass_steps=2, denoising_strength=0.5)
    for show in ("first", "hires"):
        values = [True, "", "positive", 0.0, 1.0, False, 0.5, "jet", show]
        processed = webui.processing.process_images(make_p(webui, values, **kw))
        caption = next(t for t in processed.infotexts if t.startswith("Attention heatmaps"))
        assert f"({show} pass" in caption


def test_works_with_semantic_guidance_in_the_same_generation(webui, sd_model):
    p = make_p(webui, [True, "cat, blue"], guidance=[True], prompt="a red cat AND_TOPK blue :0.5")
    processed = webui.processing.process_images(p)
    assert "Semantic guidance" in processed.infotexts[0]
    assert any(t.startswith("Attention heatmaps") for t in processed.infotexts)
    assert "not in the prompt" not in processed.comments
    job = p.promptscope_heatmaps
    result = job.by_image[(0, 0)]["first"]
    blue = next(w for w in result.words if w.word == "blue")
    cat = next(w for w in result.words if w.word == "cat")
    # "blue" comes from the concept's own row (sub-prompt 1), "cat" from the base row (sub-prompt 0)
    from promptscope_lib_ext.heatmaps.aggregate import word_map
    from promptscope_lib_ext.heatmaps.tokens import find_word

    from promptscope_a1111.host import tokenizer_for

    assert set(result.maps.positive) == {0, 1}
    tokenize = tokenizer_for(sd_model)
    expected_blue = word_map(result.maps.positive[1], find_word(tokenize(" blue"), "blue"), normalize=False)
    expected_cat = word_map(result.maps.positive[0], find_word(tokenize("a red cat"), "cat"), normalize=False)
    torch.testing.assert_close(blue.raw, expected_blue)
    torch.testing.assert_close(cat.raw, expected_cat)


def test_bad_arguments_rejected_clearly(webui, sd_model):
    processed = webui.processing.process_images(make_p(webui, [True, "", "sideways"]))
    assert "arguments rejected" in processed.comments and "sideways" in processed.comments


def test_messages_reach_an_api_client(webui, sd_model):
    # A1111's API answers with Processed.js(), which has no comments: the messages must be in its fields.
    import json

    bad = json.loads(webui.processing.process_images(make_p(webui, [True, "", "sideways"])).js())
    assert "comments" not in bad
    assert "sideways" in bad["infotexts"][0], bad["infotexts"]
    assert "sideways" in bad["extra_generation_params"]["PromptScope message"]
    missing = json.loads(webui.processing.process_images(make_p(webui, [True, "unicorn"])).js())
    assert "unicorn" in missing["extra_generation_params"]["PromptScope message"], missing["extra_generation_params"]


@pytest.mark.parametrize("model", ["sd_model", "sdxl_model"])
def test_japanese_words_get_a_map(webui, model, request):
    # CLIP writes 猫 / ねこ as byte-level pieces that do not decode one by one; the word must still be found.
    request.getfixturevalue(model)
    from promptscope_a1111.host import tokenizer_for

    tokens = tokenizer_for(webui.shared.sd_model)("a 猫 and ねこ on a mat")
    assert "猫" in tokens.words and "ねこ" in tokens.words, tokens.words
    processed = webui.processing.process_images(make_p(webui, [True, "猫, ねこ"], prompt="a 猫 and ねこ on a mat"))
    assert "not in the prompt" not in processed.comments, processed.comments
    grids = [t for t in processed.infotexts if t.startswith("Attention heatmaps")]
    assert len(grids) == 1, (processed.infotexts, processed.comments)


# Real CLIP BPE (openai/clip-vit-large-patch14's vocabulary = open_clip's bpe_simple_vocab_16e6) on
# "a 猫 and ねこ on a mat": ids and token strings as its tokenizer gives them (start/end left out).
REAL_CLIP_TOKENS = [
    (320, "a</w>"), (163, "ç"), (234, "Į"), (360, "«</w>"), (537, "and</w>"),
    (4813, "ãģ"), (255, "Ń"), (4813, "ãģ"), (497, "ĵ</w>"), (525, "on</w>"), (320, "a</w>"), (9063, "mat</w>"),
]  # fmt: skip


def test_words_from_real_clip_byte_level_tokens(webui):
    from types import SimpleNamespace

    from ldm.modules.encoders.modules import FakeCLIPTokenizer  # its byte_decoder is CLIP's byte table

    from promptscope_a1111.host import tokenize_with

    vocab = dict(REAL_CLIP_TOKENS)
    tok = SimpleNamespace(
        convert_ids_to_tokens=lambda ids: [vocab[int(i)] for i in ids], byte_decoder=FakeCLIPTokenizer.byte_decoder
    )
    ids = [i for i, _ in REAL_CLIP_TOKENS]
    body = ids + [49407] * (75 - len(ids))
    chunk = SimpleNamespace(tokens=[49406, *body, 49407], multipliers=[1.0] * 77, fixes=[])
    model = SimpleNamespace(tokenizer=tok, id_end=49407, tokenize_line=lambda prompt: ([chunk], len(ids)))
    tokens = tokenize_with(model, "a 猫 and ねこ on a mat")
    assert tokens.words == ("a", "猫", "and", "ねこ", "on", "a", "mat")
    assert [p.word_index for p in tokens.chunks[0][:9]] == [0, 1, 1, 1, 2, 3, 3, 3, 3]


def test_negative_and_delta_modes(webui, sd_model):
    for mode in ("negative", "delta"):
        processed = webui.processing.process_images(make_p(webui, [True, "", mode]))
        assert any(t.startswith("Attention heatmaps") for t in processed.infotexts), processed.comments


def test_off_wraps_nothing(webui, sd_model):
    seen: list[int] = []

    def on_denoiser(params):
        seen.append(hooks(sd_model))

    webui.script_callbacks.on_cfg_denoiser(on_denoiser)
    webui.processing.process_images(make_p(webui, [False]))
    webui.script_callbacks.remove_callbacks_for_function(on_denoiser)
    assert seen and set(seen) == {0}


def test_save_and_export(webui, sd_model, tmp_path):
    values = [True, "", "positive", 0.0, 1.0, False, 0.5, "jet", "first", True, True]
    p = make_p(webui, values, outpath_samples=str(tmp_path))
    webui.processing.process_images(p)
    exported = list((tmp_path / "promptscope-heatmaps").glob("*.safetensors"))
    assert len(exported) == 1
    from safetensors import safe_open

    with safe_open(str(exported[0]), "pt") as f:
        meta = f.metadata()
    assert "cat" in meta.get("words", "")


def test_per_layer_view_adds_a_grid_per_word_with_a_tile_per_unet_block(webui, sd_model):
    values = [True, "cat, red", "positive", 0.0, 1.0, True]  # per_layer on
    processed = webui.processing.process_images(make_p(webui, values))
    per_layer = [t for t in processed.infotexts if t.startswith("Attention heatmaps per layer")]
    assert [t.rsplit(": ", 1)[1] for t in per_layer] == ["cat", "red"]
    assert "(first pass, positive)" in per_layer[0]
    words = {w.word: w for w in processed_words(webui, values)}
    assert len(words["cat"].layers) >= 2  # a tile per block that was captured
    assert len(processed.images) == 1 + 1 + 2  # image, word grid, one per-layer grid per word
    assert hooks(sd_model) == 0


def processed_words(m, values):
    p = make_p(m, values)
    m.processing.process_images(p)
    return p.promptscope_heatmaps.by_image[(0, 0)]["first"].words
