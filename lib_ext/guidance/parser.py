"""neutral-prompt's prompt grammar (AND / AND_PERP / AND_SALT / AND_TOPK, `:w`, `[ ... ]` groups), plus inline SEGA
settings, and the plain A1111 multicond string the host computes its cond rows from.

Grammar (the facts of ljleb/sd-webui-neutral-prompt's `neutral_prompt_parser.py`, re-implemented):

- The text is cut at `[`, `]`, `:` and the keywords `AND`, `AND_PERP`, `AND_SALT`, `AND_TOPK` (case-sensitive, whole
  words: `AND_topk`, `ANDAND_TOPK`, `xAND_TOPK` are text). Whitespace-only pieces between two cuts are ignored for
  structure.
- A prompt is a list of sub-prompts; the first is a plain `AND` one, each following one starts with its keyword.
  A leading keyword therefore gives an empty first sub-prompt.
- A sub-prompt's text runs until the next keyword (at any bracket depth) or, inside a group, a `]` at depth 0.
  `:` + something Python's `float()` accepts is the sub-prompt's weight only if what follows is a keyword, the end of
  the prompt, or a `]` at depth 0 — so `(x:1.3)`, `[dog:cat:0.5]`, `x:abc` stay text. Default weight 1.
- A sub-prompt that starts with `[` is a group only if the brackets hold two or more sub-prompts (an unclosed `[`
  runs to the end); a group takes an optional `:w` right after its `]`. Otherwise `[` is text (A1111 de-emphasis).
- Everything else — emphasis, prompt editing, alternation, BREAK, `<lora:...>` — is leaf text, handed to the host
  per sub-prompt untouched.

One deliberate difference: neutral-prompt drops whitespace-only pieces from the leaf text too, so `[b] [c]` reaches
A1111 as `[b][c]`, which A1111 reads as the single word "bc". We keep leaf text as the exact slice of the prompt
(`[b] [c]`). Structure, weights and conciliations are identical; leaf texts differ only by that whitespace
(tests/unit/guidance/test_guidance_vs_neutral_prompt.py checks this against neutral-prompt's own parser and runs its
parser tests on ours, when PROMPTSCOPE_NEUTRAL_PROMPT names a checkout of it).

Inline SEGA settings: `<sega:threshold=0.9,warmup=20%,cooldown=30,momentum=0.3,beta=0.6>` (also `topk=0.1`,
meaning threshold 0.9), written anywhere inside an AND_TOPK sub-prompt, e.g.
`a castle AND_TOPK snowy <sega:topk=0.1,warmup=5> :0.4`. Why this syntax cannot change the meaning of a prompt that
neutral-prompt accepts:

- `<name:args>` is A1111's extra-network syntax. A1111 removes every `<word:...>` tag from the prompt
  (`extra_networks.parse_prompts`, before the conds are computed, so before neutral-prompt's parser ever sees the
  text) and only activates networks registered under that name; nothing registers "sega", so under A1111 with or
  without neutral-prompt such a tag has no effect on the image (A1111 logs "Skipping unknown extra network: sega").
  A prompt written for neutral-prompt therefore either has no `<sega:...>` tag (and parses here exactly as there)
  or has one that meant nothing there. The tag also stays a no-op wherever our extension is off.
- We remove the tags the same way, with A1111's own pattern `<(\\w+):([^>]+)>`, before reading the grammar, so the
  structure and weights we see are the ones neutral-prompt sees after A1111's removal (`x :0.4 <sega:...>` keeps
  its weight 0.4, as in A1111 + neutral-prompt).
- Braces (`{topk=0.1}`) were rejected: in A1111 they are ordinary text the text encoder reads, and the Dynamic
  Prompts extension expands `{a|b}`, so they would change images.

The host must read the tags before it strips extra networks (A1111: from `p.prompts` in `before_process_batch`), or
parse both texts: tags removed, both give the same tree apart from `sega`.

What neutral-prompt accepts, we accept, with the same tree: empty sub-prompts (`a AND_PERP AND b`, a leading
keyword), any finite weight (`:1001`), misplaced or malformed `<sega:...>` tags (ignored, as A1111 ignores them). Each
such oddity gives a note (`parse_prompt(...).notes`, shown under the image). `parse_root` / `parse_prompt` raise only
`PromptSyntaxError`, and only for what would break the image or the parser: a NaN or infinite weight (`:nan`,
`:1e400`), groups nested deeper than `MAX_GROUP_DEPTH`, a prompt that is not text. `safe_parse` never raises.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .tree import (
    KEYWORDS,
    CompositePrompt,
    Conciliation,
    LeafPrompt,
    PromptNode,
    SegaParams,
    StepCount,
    flatten_leaves,
    format_plain_float,
)

LARGE_WEIGHT = 1000.0  # above this a weight gets a note (the image is likely saturated); it is still used
FLOAT32_MAX = 3.4028234663852886e38  # a weight beyond this is infinite in the model's tensors: refused like inf
MAX_GROUP_DEPTH = 128  # neutral-prompt's own tests nest 100 groups; Python's stack allows a few hundred

_KEYWORD_RE = "|".join(rf"\b{k}\b" for k in KEYWORDS)
_SPLIT_RE = re.compile(rf"(\[|\]|:|{_KEYWORD_RE})")
_GUIDANCE_KEYWORD_RE = re.compile(r"\b(?:AND_PERP|AND_SALT|AND_TOPK)\b")
_EXTRA_NETWORK_RE = re.compile(r"<(\w+):([^>]+)>")  # A1111's modules/extra_networks.py pattern
SEGA_TAG_NAME = "sega"
_KEYWORD_SET = frozenset(KEYWORDS)


class PromptSyntaxError(ValueError):
    """A prompt the guidance cannot use; the message says what and where, for a one-line warning."""


# -- tokens -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int

    @property
    def is_keyword(self) -> bool:
        return self.text in _KEYWORD_SET


def _tokenize(text: str) -> list[_Token]:
    """The non-blank pieces of `text` with their offsets (blank pieces only matter as part of leaf text)."""
    tokens = []
    pos = 0
    for piece in _SPLIT_RE.split(text):
        if piece:
            if piece.strip():
                tokens.append(_Token(piece, pos, pos + len(piece)))
            pos += len(piece)
    return tokens


def _is_float(text: str) -> bool:
    try:
        float(text)
    except (ValueError, OverflowError):
        return False
    return True


# -- SEGA tags ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tag:
    params: SegaParams | None  # None when the tag could not be read (`error` says why)
    at: int  # offset in the text with the tags removed
    source: str  # the tag as written
    source_at: int  # offset in the original text
    error: str | None = None


def _strip_sega_tags(text: str) -> tuple[str, list[_Tag]]:
    out, tags, last, removed = [], [], 0, 0
    for m in _EXTRA_NETWORK_RE.finditer(text):
        if m.group(1) != SEGA_TAG_NAME:
            continue
        out.append(text[last : m.start()])
        try:
            params, error = parse_sega_args(m.group(2), where=f"{m.group(0)!r} at character {m.start()}"), None
        except PromptSyntaxError as e:
            params, error = None, str(e)
        tags.append(_Tag(params, m.start() - removed, m.group(0), m.start(), error))
        removed += m.end() - m.start()
        last = m.end()
    out.append(text[last:])
    return "".join(out), tags


def _number(value: str, key: str, where: str, lo: float, hi: float) -> float:
    try:
        x = float(value)
    except ValueError:
        raise PromptSyntaxError(f"{where}: {key}={value!r} is not a number") from None
    if not (math.isfinite(x) and lo <= x <= hi):
        raise PromptSyntaxError(f"{where}: {key}={value} must be between {lo:g} and {hi:g}")
    return x


def _step_count(value: str, key: str, where: str) -> StepCount:
    if value.endswith("%"):
        return StepCount(_number(value[:-1], key, where, 0.0, 100.0) / 100.0, relative=True)
    x = _number(value, key, where, 0.0, 1e6)
    if x != int(x):
        raise PromptSyntaxError(f"{where}: {key}={value} must be a whole number of steps or a percentage like 20%")
    return StepCount(int(x))


def parse_sega_args(args: str, where: str = "<sega:...>") -> SegaParams:
    """`threshold=0.9,warmup=20%,...` (separated by commas, semicolons or spaces) to SegaParams."""
    values: dict[str, object] = {}
    for item in re.split(r"[,;\s]+", args.strip()):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not value:
            raise PromptSyntaxError(f"{where}: expected key=value, got {item!r}")
        if key in ("threshold", "topk"):
            if "threshold" in values:
                raise PromptSyntaxError(f"{where}: give either threshold or topk, once")
            x = _number(value, key, where, 0.0, 1.0)
            values["threshold"] = x if key == "threshold" else 1.0 - x
        elif key in ("warmup", "cooldown"):
            if key in values:
                raise PromptSyntaxError(f"{where}: {key} given twice")
            values[key] = _step_count(value, key, where)
        elif key in ("momentum", "beta"):
            if key in values:
                raise PromptSyntaxError(f"{where}: {key} given twice")
            values[key] = _number(value, key, where, 0.0, 100.0 if key == "momentum" else 0.999)
        else:
            raise PromptSyntaxError(
                f"{where}: unknown setting {key!r} (known: threshold, topk, warmup, cooldown, momentum, beta)"
            )
    if not values:
        raise PromptSyntaxError(f"{where}: no settings")
    return SegaParams(**values)  # type: ignore[arg-type]


# -- grammar ------------------------------------------------------------------------------------------------------


@dataclass
class _LeafInfo:
    span: tuple[int, int]  # where the sub-prompt lies (keyword excluded, weight included), tag-free offsets
    keyword_at: int | None
    weight_at: int | None


class _Parser:
    """neutral-prompt's recursive descent over tokens, with a cursor instead of token-list copies and a memo.

    The memo matters: `[` first tries a group and falls back to text, and the fallback re-reads sub-prompts the
    failed attempt already read, which without memoisation is exponential in the nesting (`[[a AND [[b AND ...`).
    A sub-prompt's parse depends only on where it starts, whether it is the first of its list, and whether it is
    inside a group, so those three key the memo.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.n = len(self.toks)
        self.memo: dict[tuple[int, bool, bool], tuple[PromptNode, int]] = {}
        self.info: dict[int, _LeafInfo] = {}  # id(leaf) -> where it came from
        # A group needs a keyword after its `[`; without one, `[` is text and we need not recurse (`[[[[x`).
        self.last_keyword = max((i for i, t in enumerate(self.toks) if t.is_keyword), default=-1)

    def parse(self) -> CompositePrompt:
        children, _ = self.prompts(0, nested=False, depth=0)
        return CompositePrompt(1.0, None, children)

    def prompts(self, pos: int, *, nested: bool, depth: int) -> tuple[list[PromptNode], int]:
        node, pos = self.prompt(pos, first=True, nested=nested, depth=depth)
        out = [node]
        while pos < self.n:
            if nested and self.toks[pos].text == "]":
                break
            node, pos = self.prompt(pos, first=False, nested=nested, depth=depth)
            out.append(node)
        return out, pos

    def prompt(self, pos: int, *, first: bool, nested: bool, depth: int) -> tuple[PromptNode, int]:
        key = (pos, first, nested)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = self._prompt(pos, first=first, nested=nested, depth=depth)
        return hit

    def _prompt(self, pos: int, *, first: bool, nested: bool, depth: int) -> tuple[PromptNode, int]:
        toks, n = self.toks, self.n
        keyword_at = None
        conciliation = None
        if not first and pos < n and toks[pos].is_keyword:
            if toks[pos].text != "AND":
                conciliation = Conciliation(toks[pos].text)
            keyword_at = toks[pos].start
            pos += 1
        begin = toks[pos - 1].end if pos > 0 else 0

        if pos < n and toks[pos].text == "[" and self.last_keyword > pos:
            if depth >= MAX_GROUP_DEPTH:
                raise PromptSyntaxError(f"brackets nested deeper than {MAX_GROUP_DEPTH} levels")
            children, after = self.prompts(pos + 1, nested=True, depth=depth + 1)
            if after < n:  # the nested list stopped at its `]` (otherwise the group runs to the end)
                after += 1
            if len(children) > 1:
                weight, after, _ = self.weight_after_group(after)
                return CompositePrompt(weight, conciliation, children), after

        text, weight, weight_at, pos = self.prompt_text(pos, nested=nested)
        leaf = LeafPrompt(weight, conciliation, text)
        end = toks[pos].start if pos < n else len(self.text)
        self.info[id(leaf)] = _LeafInfo((begin, end), keyword_at, weight_at)
        return leaf, pos

    def prompt_text(self, pos: int, *, nested: bool) -> tuple[str, float, int | None, int]:
        toks, n = self.toks, self.n
        depth = 0
        first_tok = last_tok = None
        while pos < n:
            t = toks[pos].text
            if t == "]":
                if depth == 0:
                    if nested:
                        break
                else:
                    depth -= 1
            elif t == "[":
                depth += 1
            elif t == ":":
                if pos + 1 < n and _is_float(toks[pos + 1].text.strip()):
                    follow = toks[pos + 2] if pos + 2 < n else None
                    if follow is None or follow.is_keyword or (follow.text == "]" and depth == 0):
                        weight = float(toks[pos + 1].text.strip())
                        return self._slice(first_tok, last_tok), weight, toks[pos + 1].start, pos + 2
            elif toks[pos].is_keyword:
                break
            if first_tok is None:
                first_tok = pos
            last_tok = pos
            pos += 1
        return self._slice(first_tok, last_tok), 1.0, None, pos

    def weight_after_group(self, pos: int) -> tuple[float, int, int | None]:
        toks = self.toks
        if pos + 1 < self.n and toks[pos].text == ":" and _is_float(toks[pos + 1].text):
            return float(toks[pos + 1].text), pos + 2, toks[pos + 1].start
        return 1.0, pos, None

    def _slice(self, first_tok: int | None, last_tok: int | None) -> str:
        if first_tok is None or last_tok is None:
            return ""
        return self.text[self.toks[first_tok].start : self.toks[last_tok].end]


# -- public API ---------------------------------------------------------------------------------------------------


@dataclass
class ParsedPrompt:
    tree: CompositePrompt
    notes: list[str]  # what is odd in the prompt (one line each, for under the image); the tree is still used


def parse_prompt(text: str) -> ParsedPrompt:
    """Parse a whole prompt into neutral-prompt's tree, with notes on odd input. Raises only PromptSyntaxError, for
    what would break the image: NaN / infinite weights, nesting deeper than MAX_GROUP_DEPTH, non-text."""
    tree, notes = _parse(text, check=True)
    return ParsedPrompt(tree, notes)


def parse_root(text: str, *, strict: bool = True) -> CompositePrompt:
    """The tree of a whole prompt (notes dropped). Raises only PromptSyntaxError.

    strict=False also returns trees with non-finite weights: exactly the tree neutral-prompt builds (leaf whitespace
    aside), for comparisons.
    """
    return _parse(text, check=strict)[0]


def _parse(text: str, *, check: bool) -> tuple[CompositePrompt, list[str]]:
    if not isinstance(text, str):
        raise PromptSyntaxError(f"prompt must be text, not {type(text).__name__}")
    notes: list[str] = []
    try:
        stripped, tags = _strip_sega_tags(text)
        parser = _Parser(stripped)
        tree = parser.parse()
        _attach_and_check(tree, parser, tags, notes, check=check)
    except RecursionError:
        raise PromptSyntaxError("prompt is nested too deeply to parse") from None
    return tree, notes


def safe_parse(text: str) -> tuple[CompositePrompt | None, list[str]]:
    """(tree, notes), or (None, [the one-line reason]) when the prompt cannot be used; never raises."""
    try:
        parsed = parse_prompt(text)
    except PromptSyntaxError as e:
        return None, [f"semantic guidance off for this prompt: {e}"]
    except Exception as e:  # a parser bug must not break the host's generation
        return None, [f"semantic guidance off for this prompt (internal parser error: {type(e).__name__}: {e})"]
    return parsed.tree, [f"semantic guidance: {note}" for note in parsed.notes]


def flatten_for_host(tree: CompositePrompt) -> str:
    """The plain A1111 multicond string ` text :w AND text :w ...`, one sub-prompt per leaf in flatten order.

    Weights are written as plain decimals (A1111's weight pattern reads no exponents), so the host's cond list holds
    exactly the leaves' weights. Each leaf's text is stripped and preceded by one space, so equal concepts reach
    A1111 as the same text (" cat") wherever they stand, and A1111 computes that row once (it keys rows by text;
    the text encoder ignores outer whitespace).
    """
    return "AND".join(f" {leaf.prompt.strip()} :{format_plain_float(leaf.weight)} " for leaf in flatten_leaves(tree))


def keyword_line(keyword: str, text: str, weight: float, sega: SegaParams | None = None) -> str:
    """The line the prompt helper appends: `\nAND_TOPK glasses <sega:...> :0.4` (as neutral-prompt's formatter,
    plus the optional settings tag). Raises PromptSyntaxError for input that would not parse back to that leaf."""
    if keyword not in KEYWORDS:
        raise PromptSyntaxError(f"unknown keyword {keyword!r}; use one of {', '.join(KEYWORDS)}")
    text = " ".join(str(text).split())
    if not text:
        raise PromptSyntaxError(f"{keyword} needs a concept text")
    if _SPLIT_RE.search(text.replace("[", "").replace("]", "").replace(":", "")) or _EXTRA_NETWORK_RE.search(text):
        raise PromptSyntaxError(f"the concept text {text!r} contains a keyword or a <...:...> tag")
    weight = float(weight)
    if not math.isfinite(weight):
        raise PromptSyntaxError(f"weight {weight} must be a finite number")
    tag = sega.to_tag() if sega is not None else ""
    if tag and keyword != Conciliation.TOPK.value:
        raise PromptSyntaxError("SEGA settings apply to AND_TOPK only")
    return f"\n{keyword} {text}{' ' + tag if tag else ''} :{format_plain_float(weight)}"


def has_keywords(text: str) -> bool:
    """True if the prompt uses AND_PERP / AND_SALT / AND_TOPK (which A1111 alone would read as plain text)."""
    return isinstance(text, str) and _GUIDANCE_KEYWORD_RE.search(text) is not None


# -- checks -------------------------------------------------------------------------------------------------------


def _attach_and_check(tree: CompositePrompt, parser: _Parser, tags: list[_Tag], notes: list[str], *, check: bool):
    leaves = flatten_leaves(tree)
    infos = [parser.info[id(leaf)] for leaf in leaves]

    def orig_at(at: int) -> int:  # offset in the tag-free text -> offset in what the user typed
        shift = 0
        for tag in tags:
            if tag.at <= at:
                shift += len(tag.source)
        return at + shift

    if check:  # refusals first: nothing else matters for a prompt we do not use
        for leaf, info in zip(leaves, infos):
            if not _usable(leaf.weight):
                where = f" at character {orig_at(info.weight_at)}" if info.weight_at is not None else ""
                raise PromptSyntaxError(f"weight {leaf.weight:g}{where} is not a finite number{_f32(leaf.weight)}")
        for node in _groups(tree):
            if not _usable(node.weight):
                raise PromptSyntaxError(f"group weight {node.weight:g} is not a finite number{_f32(node.weight)}")

    ignored = "ignored (A1111 removes it from the prompt like any extra-network tag)"
    for tag in tags:
        if tag.params is None:
            notes.append(f"{tag.error}; the tag is {ignored}")
            continue
        owner = next((leaf for leaf, info in zip(leaves, infos) if info.span[0] <= tag.at <= info.span[1]), None)
        if owner is None:
            notes.append(f"{tag.source!r} at character {tag.source_at} is not inside a sub-prompt, so it is "
                         f"{ignored}; put it in the AND_TOPK concept's text, e.g. "
                         "'AND_TOPK glasses <sega:topk=0.1> :0.5'")  # fmt: skip
            continue
        if owner.conciliation is not Conciliation.TOPK:
            kind = owner.conciliation.value if owner.conciliation else "AND"
            notes.append(f"{tag.source!r} at character {tag.source_at} belongs to an {kind} sub-prompt; SEGA settings "
                         f"apply to AND_TOPK concepts only, so it is {ignored}")  # fmt: skip
            continue
        if owner.sega is None:
            owner.sega = tag.params
        elif any(
            getattr(tag.params, f) is not None and getattr(owner.sega, f) is not None
            for f in ("threshold", "warmup", "cooldown", "momentum", "beta")
        ):
            notes.append(f"{tag.source!r} at character {tag.source_at} repeats a SEGA setting of its concept; "
                         "the first value is used")  # fmt: skip
            owner.sega = owner.sega.merged_over(tag.params)
        else:
            owner.sega = tag.params.merged_over(owner.sega)

    for index, (leaf, info) in enumerate(zip(leaves, infos)):
        if not leaf.prompt.strip():
            if leaf.conciliation is not None:
                at = orig_at(info.keyword_at) if info.keyword_at is not None else 0
                notes.append(f"{leaf.conciliation.value} at character {at} has no text, so it guides towards the "
                             "empty prompt (as in neutral-prompt)")  # fmt: skip
            elif index == 0 and len(leaves) > 1:
                notes.append("the prompt starts with a keyword, so its first sub-prompt is empty (the empty prompt, "
                             "as in neutral-prompt)")  # fmt: skip
            elif len(leaves) > 1:
                at = orig_at(info.keyword_at) if info.keyword_at is not None else orig_at(info.span[0])
                notes.append(f"the AND sub-prompt at character {at} has no text (the empty prompt, as in "
                             "neutral-prompt)")  # fmt: skip
        if math.isfinite(leaf.weight) and abs(leaf.weight) > LARGE_WEIGHT:
            where = f" at character {orig_at(info.weight_at)}" if info.weight_at is not None else ""
            notes.append(f"weight {leaf.weight:g}{where} is beyond ±{LARGE_WEIGHT:g}; it is used "
                         "as written, expect a saturated image")  # fmt: skip
    for node in _groups(tree):
        if math.isfinite(node.weight) and abs(node.weight) > LARGE_WEIGHT:
            notes.append(f"group weight {node.weight:g} is beyond ±{LARGE_WEIGHT:g}; it is used as "
                         "written, expect a saturated image")  # fmt: skip


def _usable(weight: float) -> bool:
    """Finite, also once the model's 32-bit tensors hold it (1e39 would be inf there)."""
    return math.isfinite(weight) and abs(weight) <= FLOAT32_MAX


def _f32(weight: float) -> str:
    return " in the model's 32-bit tensors (at most ±3.4e38)" if math.isfinite(weight) else ""


def _groups(tree: CompositePrompt) -> list[CompositePrompt]:
    """The nested groups (not the root), iteratively (trees may be deep)."""
    out: list[CompositePrompt] = []
    stack: list[PromptNode] = list(tree.children)
    while stack:
        node = stack.pop()
        if isinstance(node, CompositePrompt):
            out.append(node)
            stack.extend(node.children)
    return out
