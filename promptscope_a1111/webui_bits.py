"""Small pieces of A1111 integration shared by the feature scripts: messages, settings, X/Y/Z axes, API args."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from modules import scripts, shared

log = logging.getLogger("promptscope")

SECTION = ("promptscope", "PromptScope")
OVERRIDES_ATTR = "promptscope_overrides"  # on p: {feature: {setting: value}} set by X/Y/Z axes

_said_once: set[str] = set()


def say_once(message: str) -> None:
    """A console line printed once per WebUI run (keyword handler choice, unsupported host)."""
    if message not in _said_once:
        _said_once.add(message)
        print(f"PromptScope: {message}")


# The infotext key of our messages. A1111 v1.10.1's API answer (`Processed.js()`) has no generation-info comments,
# so a message an API client must see goes into `extra_generation_params`: every image's infotext when it is
# written before the images are made, and `info["extra_generation_params"]` in any case.
MESSAGE_KEY = "PromptScope message"


def record_message(params: Any, message: str) -> None:
    """Add `message` to `params` (a job's `extra_generation_params`) under MESSAGE_KEY, once; several join by |."""
    if not isinstance(params, dict):
        return
    line = message.removeprefix("PromptScope: ").strip()
    old = params.get(MESSAGE_KEY)
    if isinstance(old, str) and old:
        if line not in old.split(" | "):
            params[MESSAGE_KEY] = f"{old} | {line}"
    else:
        params[MESSAGE_KEY] = line


def tell_user(p: Any, message: str) -> None:
    """Show a message under the generated image (A1111's generation-info comments), in the infotext (which API
    clients get) and in the console."""
    text = f"PromptScope: {message}" if not message.startswith("PromptScope") else message
    comments = getattr(p, "comments", None)
    if isinstance(comments, dict):
        comments[text] = 1
    record_message(getattr(p, "extra_generation_params", None), text)
    log.warning(text)
    print(text)


def add_to_processed(processed: Any, messages: Sequence[str]) -> None:
    """Messages found after the images were made: appended to the info shown under them and to the API answer's
    `extra_generation_params` (the images' infotexts are already written)."""
    lines = [m if m.startswith("PromptScope") else f"PromptScope: {m}" for m in messages]
    if lines and isinstance(getattr(processed, "comments", None), str):
        processed.comments += "".join(f"{line}\n" for line in lines if line not in processed.comments)
    for line in lines:
        record_message(getattr(processed, "extra_generation_params", None), line)


def option(key: str, default: Any) -> Any:
    return shared.opts.data.get(key, default)


def add_options(options: dict[str, tuple[Any, str, Any, dict[str, Any] | None]]) -> None:
    """Register settings in our Settings section: key -> (default, label, gradio component or None, its args)."""
    for key, (default, label, component, component_args) in options.items():
        if key in getattr(shared.opts, "data_labels", {}):
            continue
        shared.opts.add_option(key, shared.OptionInfo(default, label, component, component_args, section=SECTION))


def override(p: Any, feature: str, name: str, value: Any) -> None:
    """Record an X/Y/Z axis value for this job; the feature script merges it over its UI arguments."""
    p.__dict__.setdefault(OVERRIDES_ATTR, {}).setdefault(feature, {})[name] = value


def overrides(p: Any, feature: str) -> dict[str, Any]:
    return dict((getattr(p, OVERRIDES_ATTR, None) or {}).get(feature, {}))


def xyz_module() -> Any | None:
    """The built-in X/Y/Z plot script's module, as extensions find it (it is loaded as a script, not imported)."""
    for data in getattr(scripts, "scripts_data", []):
        module = getattr(data, "module", None)
        if module is not None and hasattr(module, "AxisOption") and hasattr(module, "axis_options"):
            return module
    return None


def add_xyz_axes(feature: str, axes: Sequence[tuple[str, type, str, Sequence[str] | None]]) -> int:
    """Append our axes (label, type, setting name, choices) once; returns how many were added."""
    xyz = xyz_module()
    if xyz is None:
        return 0
    existing = {getattr(a, "label", None) for a in xyz.axis_options}
    added = 0
    for label, kind, name, choices in axes:
        if label in existing:
            continue

        def apply(p: Any, x: Any, xs: Any, _name: str = name) -> None:
            override(p, feature, _name, x)

        kwargs: dict[str, Any] = {}
        if choices is not None:
            kwargs["choices"] = lambda _c=tuple(choices): list(_c)
        xyz.axis_options.append(xyz.AxisOption(label, kind, apply, **kwargs))
        added += 1
    return added


def api_args(args: Sequence[Any], names: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Script arguments as a dict. Accepts the UI's positional list (what `alwayson_scripts` "args" holds, in
    `ui()` order; missing trailing ones take the defaults) or a dict of named values as the first argument (the
    API fills the remaining positions with the UI's defaults, which are then ignored). Raises ValueError naming
    what is wrong."""
    if args and isinstance(args[0], dict):
        given = dict(args[0])
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown}; expected some of: {', '.join(names)}")
        return {**defaults, **given}
    if len(args) > len(names):
        raise ValueError(f"expected at most {len(names)} arguments ({', '.join(names)}), got {len(args)}")
    values = dict(defaults)
    for name, value in zip(names, args):
        if value is not None:
            values[name] = value
    return values


def on_prompt_box(script: Any, store: Callable[[Any], None]) -> None:
    """Call `store(textbox)` with this tab's prompt box once A1111 creates it (for prompt helpers)."""
    if not hasattr(script, "on_after_component"):
        return
    for elem_id in ("txt2img_prompt", "img2img_prompt"):
        script.on_after_component(lambda c, _id=elem_id: store(getattr(c, "component", c)), elem_id=elem_id)
