"""The pattern grammar: one line per model, stages separated by `|`.

    pattern := stage ('|' stage)*
    stage   := item+
    item    := atom ('*' COUNT)?
    atom    := SYMBOL ('[' NAME '=' VALUE (',' NAME '=' VALUE)* ']')? | '(' item+ ')'

SYMBOL is a registered block (`C`, `M`, `A`, or a user block: an upper-case letter optionally
followed by lower-case letters), so `MMAA`, `M*2 A*2` and `(M)*2 (A)*2` all mean the same stage.
Parsing validates every option against its block's schema and drops values equal to the default,
which makes `Pattern` equality structural and `canonical()` unique: `parse(canonical(p)) == parse(p)`.

Limits, checked while reading and before anything is expanded, so hostile input fails fast with one line:
a pattern has at most MAX_BLOCKS blocks in all (counted arithmetically: `(M*1000)*1000` is refused at its
second count, without building a list), groups nest at most MAX_DEPTH deep, a count has at most
MAX_COUNT_DIGITS ASCII digits and is at most MAX_REPEAT. MAX_REPEAT equals MAX_BLOCKS, so the canonical form,
which folds a stage into runs of at most the stage's length, always parses again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from blocks.registry import BlockType, block_types, get_block_type
from hybridlab.errors import PatternError

MAX_BLOCKS = 4096  # blocks in a whole pattern
MAX_REPEAT = MAX_BLOCKS  # largest count: any run the canonical form folds stays within it
MAX_DEPTH = 32  # nested groups
MAX_COUNT_DIGITS = 6  # digits of one count, leading zeros included
MAX_VALUE_CHARS = 64  # characters of one option value
_DIGITS = "0123456789"
_VALUE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")


@dataclass(frozen=True)
class BlockSpec:
    """One block of a pattern: its symbol and its non-default options, sorted by name."""

    symbol: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def block_type(self) -> BlockType:
        return get_block_type(self.symbol)

    def resolved_options(self) -> dict[str, Any]:
        """Every option of this block with defaults filled in."""
        values = self.block_type.defaults()
        values.update(self.options)
        return values

    def option(self, name: str) -> Any:
        return self.resolved_options()[name]

    def canonical(self) -> str:
        if not self.options:
            return self.symbol
        schema = self.block_type.options
        body = ",".join(f"{k}={schema[k].format(v)}" for k, v in self.options)
        return f"{self.symbol}[{body}]"


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern: a tuple of stages, each a tuple of BlockSpecs."""

    stages: tuple[tuple[BlockSpec, ...], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(stage) for stage in self.stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def canonical(self) -> str:
        return " | ".join(_canonical_stage(stage) for stage in self.stages)

    def stage_canonical(self, index: int) -> str:
        return _canonical_stage(self.stages[index])

    def symbols(self) -> tuple[str, ...]:
        """Stage layouts as plain symbol strings, e.g. ('C', 'CCC', 'MMMMAAAA', 'MMAA')."""
        return tuple("".join(b.symbol for b in stage) for stage in self.stages)

    def __str__(self) -> str:
        return self.canonical()


def parse(text: str | Pattern) -> Pattern:
    """Parse and validate a pattern string; raise PatternError naming the problem and the column."""
    if isinstance(text, Pattern):
        return text
    if not isinstance(text, str):
        raise PatternError(f"expected a pattern string, got {type(text).__name__}")
    return _Parser(text).parse()


def with_blocks(base: Pattern, positions: Sequence[tuple[int, int]], blocks: Sequence[BlockSpec]) -> Pattern:
    """`base` with `blocks[k]` at `positions[k]` (0-based (stage, index)): one layout of a per-position search."""
    stages = [list(stage) for stage in base.stages]
    for (s, j), block in zip(positions, blocks, strict=True):
        stages[s][j] = block
    return Pattern(tuple(tuple(stage) for stage in stages))


def first_fixed_mismatch(pattern: Pattern, base: Pattern, positions: Collection[tuple[int, int]]) -> tuple[int, int] | None:
    """The first (stage, index) outside `positions` where `pattern` differs from `base` (equal depths assumed)."""
    for s, stage in enumerate(base.stages):
        for j, block in enumerate(stage):
            if (s, j) not in positions and pattern.stages[s][j] != block:
                return s, j
    return None


def canonical(pattern: str | Pattern) -> str:
    """The canonical text of a pattern: run-length encoded (periodic stages as one group), options sorted,
    defaults dropped."""
    return parse(pattern).canonical()


def _canonical_stage(stage: tuple[BlockSpec, ...]) -> str:
    """A periodic stage folds to `(unit)*k` (`A M A M` -> `(A M)*2`); otherwise runs fold to `X*n`.

    Both rules are functions of the block sequence alone, so the text is unique for each stage.
    """
    n = len(stage)
    for period in range(1, n // 2 + 1):
        if n % period == 0 and stage == stage[:period] * (n // period):
            if period == 1:
                return f"{stage[0].canonical()}*{n}"
            return f"({_canonical_stage(stage[:period])})*{n // period}"
    parts: list[str] = []
    i = 0
    while i < n:
        j = i
        while j < n and stage[j] == stage[i]:
            j += 1
        text = stage[i].canonical()
        parts.append(text if j - i == 1 else f"{text}*{j - i}")
        i = j
    return " ".join(parts)


class _Parser:
    """A small recursive-descent parser over the raw text; positions are 0-based internally."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.known = block_types()
        self.done = 0  # blocks in the stages already read

    # -- helpers -------------------------------------------------------------------------------
    def error(self, message: str, pos: int | None = None) -> PatternError:
        return PatternError(message, col=(self.pos if pos is None else pos) + 1)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def describe(self, ch: str) -> str:
        return "end of pattern" if not ch else repr(ch)

    @staticmethod
    def quote(text: str) -> str:
        """repr() of user text, cut so that an error message stays one short line."""
        return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."

    # -- grammar -------------------------------------------------------------------------------
    def parse(self) -> Pattern:
        if not self.text.strip():
            raise PatternError("empty pattern (example: 'C | C*3 | M*4 A*4 | M*2 A*2')")
        stages: list[tuple[BlockSpec, ...]] = []
        while True:
            start = self.pos
            self.skip_space()
            stage_start = self.pos
            blocks = self.items(closing="", base=self.done, depth=0)
            if not blocks:
                at = stage_start if self.pos < len(self.text) else max(start, len(self.text) - 1)
                raise self.error(f"stage {len(stages) + 1} is empty", at)
            self.done += len(blocks)
            stages.append(tuple(blocks))
            ch = self.peek()
            if ch == "|":
                self.pos += 1
                continue
            if not ch:
                return Pattern(tuple(stages))
            raise self.error(f"unexpected {self.describe(ch)}")

    def check_size(self, blocks: int, pos: int) -> None:
        """Refuse once the pattern is sure to exceed MAX_BLOCKS; `blocks` is a lower bound of its total."""
        if blocks > MAX_BLOCKS:
            raise self.error(f"too many blocks: {blocks} or more (a pattern has at most {MAX_BLOCKS})", pos)

    def items(self, closing: str, base: int, depth: int) -> list[BlockSpec]:
        """Items until '|', the closing bracket of a group, or the end.

        `base` counts the blocks around this list that are already certain (earlier stages, the enclosing
        lists so far): every block read here adds at least one more, whatever counts follow.
        """
        out: list[BlockSpec] = []
        while True:
            ch = self.peek()
            if not ch or ch == "|" or (closing and ch == closing):
                return out
            if ch == ")":
                raise self.error("unmatched ')'")
            pos = self.pos
            out.extend(self.item(base + len(out), depth))
            self.check_size(base + len(out), pos)

    def item(self, base: int, depth: int) -> list[BlockSpec]:
        ch = self.peek()
        if ch == "(":
            open_pos = self.pos
            if depth >= MAX_DEPTH:
                raise self.error(f"groups are nested more than {MAX_DEPTH} deep", open_pos)
            self.pos += 1
            inner = self.items(closing=")", base=base, depth=depth + 1)
            if self.peek() != ")":
                raise self.error("unclosed '(' (missing ')')", open_pos)
            if not inner:
                raise self.error("empty group '()'", open_pos)
            self.pos += 1
            unit = inner
        elif ch.isascii() and ch.isupper():
            unit = [self.block()]
        elif ch == "*":
            raise self.error("'*' must follow a block or a group, e.g. M*4 or (M A)*2")
        elif ch in _DIGITS:
            raise self.error(f"unexpected number {ch!r}; write repetition as M*{ch}")
        elif ch in "[]":
            raise self.error(f"unexpected {ch!r}; options follow a block symbol, e.g. M[d_state=16]")
        else:
            raise self.error(f"unexpected {self.describe(ch)} (blocks are {', '.join(self.known)})")
        if self.peek() == "*":
            self.pos += 1
            self.skip_space()
            count_pos = self.pos
            count = self.count()
            self.check_size(base + len(unit) * count, count_pos)  # before the list is built
            return unit * count
        return unit

    def count(self) -> int:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _DIGITS:
            self.pos += 1
            if self.pos - start > MAX_COUNT_DIGITS:
                raise self.error(f"repetition count is too large (more than {MAX_COUNT_DIGITS} digits; max {MAX_REPEAT})", start)
        digits = self.text[start:self.pos]
        if not digits:
            got = self.text[self.pos] if self.pos < len(self.text) else ""
            raise self.error(f"expected a repetition count after '*', got {self.describe(got)}", start)
        count = int(digits)
        if count < 1:
            raise self.error("repetition count must be at least 1", start)
        if count > MAX_REPEAT:
            raise self.error(f"repetition count {count} is too large (max {MAX_REPEAT})", start)
        return count

    def block(self) -> BlockSpec:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos].isascii() and self.text[self.pos].islower():
            self.pos += 1
        symbol = self.text[start:self.pos]
        block_type = self.known.get(symbol)
        if block_type is None:
            raise self.error(f"unknown block {self.quote(symbol)} (known: {', '.join(self.known)})", start)
        options: dict[str, Any] = {}
        if self.pos < len(self.text) and self.text[self.pos] == "[":
            options = self.options(block_type)
        defaults = block_type.defaults()
        kept = tuple(sorted((k, v) for k, v in options.items() if v != defaults[k]))
        return BlockSpec(symbol, kept)

    def options(self, block_type: BlockType) -> dict[str, Any]:
        open_pos = self.pos
        self.pos += 1  # '['
        values: dict[str, Any] = {}
        while True:
            self.skip_space()
            if self.pos >= len(self.text):
                raise self.error("unclosed '[' (missing ']')", open_pos)
            if self.text[self.pos] == "]" and not values:
                raise self.error("empty options '[]'", open_pos)
            name_pos = self.pos
            while self.pos < len(self.text) and self.text[self.pos].isascii() and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
                self.pos += 1
            name = self.text[name_pos:self.pos]
            if not name:
                got = self.text[self.pos] if self.pos < len(self.text) else ""
                raise self.error(f"expected an option name, got {self.describe(got)}", name_pos)
            schema = block_type.options
            if name not in schema:
                known = ", ".join(schema) or "none"
                raise self.error(f"unknown option {self.quote(name)} for block {block_type.symbol!r} (known: {known})", name_pos)
            if name in values:
                raise self.error(f"option {name!r} given twice", name_pos)
            if self.peek() != "=":
                raise self.error(f"expected '=' after option {name!r}")
            self.pos += 1
            self.skip_space()
            value_pos = self.pos
            while self.pos < len(self.text) and self.text[self.pos] in _VALUE_CHARS:
                self.pos += 1
                if self.pos - value_pos > MAX_VALUE_CHARS:
                    raise self.error(f"value of option {name!r} is longer than {MAX_VALUE_CHARS} characters", value_pos)
            raw = self.text[value_pos:self.pos]
            if not raw:
                got = self.text[self.pos] if self.pos < len(self.text) else ""
                raise self.error(f"expected a value for option {name!r}, got {self.describe(got)}", value_pos)
            try:
                values[name] = schema[name].coerce(raw)
            except ValueError as exc:
                raise self.error(f"option {name!r} of block {block_type.symbol!r}: {exc}", value_pos) from None
            ch = self.peek()
            if ch == ",":
                self.pos += 1
                continue
            if ch == "]":
                self.pos += 1
                return values
            if not ch:
                raise self.error("unclosed '[' (missing ']')", open_pos)
            raise self.error(f"expected ',' or ']' in options, got {self.describe(ch)}")
