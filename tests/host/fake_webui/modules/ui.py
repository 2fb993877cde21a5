"""``modules.ui``: only the prompt token counter (it parses AND sub-prompts with ``get_multicond_prompt_list``)."""

from functools import reduce

from modules import extra_networks, prompt_parser, script_callbacks
from modules.sd_hijack import model_hijack


def update_token_counter(text, steps, styles, *, is_positive=True):
    params = script_callbacks.BeforeTokenCounterParams(text, steps, styles, is_positive=is_positive)
    script_callbacks.before_token_counter_callback(params)
    text, steps, styles, is_positive = params.prompt, params.steps, params.styles, params.is_positive
    try:
        text, _ = extra_networks.parse_prompt(text)
        if is_positive:
            _, prompt_flat_list, _ = prompt_parser.get_multicond_prompt_list([text])
        else:
            prompt_flat_list = [text]
        prompt_schedules = prompt_parser.get_learned_conditioning_prompt_schedules(prompt_flat_list, steps)
    except Exception:
        # typing produces unparsable prompts; the WebUI falls back to the raw text silently
        prompt_schedules = [[[steps, text]]]
    flat_prompts = reduce(lambda a, b: a + b, prompt_schedules)
    prompts = [prompt_text for _, prompt_text in flat_prompts]
    token_count, max_length = max([model_hijack.get_prompt_lengths(prompt) for prompt in prompts], key=lambda x: x[0])
    return f"<span class='gr-box gr-text-input'>{token_count}/{max_length}</span>"


def update_negative_prompt_token_counter(*args):
    return update_token_counter(*args, is_positive=False)
