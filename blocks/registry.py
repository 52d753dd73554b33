"""The block registry: pattern symbols -> module classes and their option schemas.

A block is one class plus one `register_block` call. Three kinds exist:

- ``conv``: works on NCHW feature maps (e.g. the MambaVision conv block `C`).
- ``mixer``: a token mixer on (batch*windows, tokens, dim); the builder wraps it in the standard
  MambaVision block (LayerNorm, mixer, layer scale, MLP, drop path), e.g. `M` and `A`.
- ``token``: a complete token block on (batch*windows, tokens, dim), residuals included.

Token kinds (`mixer`, `token`) run inside non-overlapping windows and automatically get a
``window`` option (0 = the stage's window size).

Constructor arguments come from two places: the block's options from the pattern, and the build
context (`dim`, `num_heads`, `window_size`, `mlp_ratio`, `drop_path`, `layer_scale`), each passed
only when the constructor accepts a parameter of that name (or ``**kwargs``). Conv blocks receive
the model's ``layer_scale_conv`` as ``layer_scale``; for ``mixer`` blocks `drop_path`, `mlp_ratio`
and `layer_scale` go to the wrapper instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from blocks.options import Option

BlockKind = Literal["conv", "mixer", "token"]
KINDS: tuple[str, ...] = ("conv", "mixer", "token")
WINDOW_OPTION = Option("window", int, 0, min=0, max=4096, help="window side; 0 = the stage's window size")


@dataclass(frozen=True)
class BlockContext:
    """Where a block is built: its width and the model-level settings it may use."""

    dim: int
    num_heads: int = 1
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    layer_scale: float | None = None
    layer_scale_conv: float | None = None
    stage: int = 0
    index: int = 0


@dataclass(frozen=True)
class BlockType:
    """A registered block: symbol, constructor, kind and option schema."""

    symbol: str
    cls: Callable[..., nn.Module]
    kind: BlockKind
    options: Mapping[str, Option] = field(default_factory=dict)
    help: str = ""

    @property
    def is_token(self) -> bool:
        return self.kind in ("mixer", "token")

    def defaults(self) -> dict[str, Any]:
        return {name: opt.default for name, opt in self.options.items()}


_REGISTRY: dict[str, BlockType] = {}


def register_block(
    symbol: str,
    cls: Callable[..., nn.Module],
    options: Sequence[Option] = (),
    kind: BlockKind = "mixer",
    help: str = "",
    replace: bool = False,
) -> BlockType:
    """Register `cls` under `symbol` so patterns can use it; returns the BlockType.

    `symbol` is one upper-case letter optionally followed by lower-case letters (`G`, `Mx`, `Ssm`).
    Registering an existing symbol again raises unless `replace=True`.
    """
    if not _valid_symbol(symbol):
        raise ValueError(
            f"block symbol {symbol!r} must be an upper-case letter optionally followed by lower-case letters"
        )
    if kind not in KINDS:
        raise ValueError(f"block kind {kind!r} is not one of {', '.join(KINDS)}")
    if symbol in _REGISTRY and not replace:
        raise ValueError(f"block symbol {symbol!r} is already registered (pass replace=True to override)")
    schema: dict[str, Option] = {}
    for opt in options:
        if opt.name in schema:
            raise ValueError(f"block {symbol!r}: option {opt.name!r} declared twice")
        schema[opt.name] = opt
    if kind != "conv":
        schema.setdefault("window", WINDOW_OPTION)
    block_type = BlockType(symbol=symbol, cls=cls, kind=kind, options=dict(sorted(schema.items())), help=help)
    _REGISTRY[symbol] = block_type
    return block_type


def unregister_block(symbol: str) -> None:
    """Remove a symbol (mainly for tests and interactive use)."""
    _REGISTRY.pop(symbol, None)


def get_block_type(symbol: str) -> BlockType:
    """The BlockType for `symbol`; KeyError when it is not registered."""
    _ensure_builtins()
    return _REGISTRY[symbol]


def block_types() -> dict[str, BlockType]:
    """All registered block types, by symbol (sorted)."""
    _ensure_builtins()
    return dict(sorted(_REGISTRY.items()))


def known_symbols() -> list[str]:
    return list(block_types())


def build_block(symbol: str, options: Mapping[str, Any], ctx: BlockContext) -> nn.Module:
    """Construct one block from its symbol, its full option values and the build context."""
    block_type = get_block_type(symbol)
    opts = {k: v for k, v in options.items() if k != "window"}
    if block_type.kind == "conv":
        context = _context_kwargs(ctx, layer_scale=ctx.layer_scale_conv)
        return _call(block_type.cls, context, opts)
    if block_type.kind == "token":
        return _call(block_type.cls, _context_kwargs(ctx, layer_scale=ctx.layer_scale), opts)
    from blocks.token_block import TokenBlock  # the standard MambaVision block wrapper

    mixer_context = {"dim": ctx.dim, "num_heads": ctx.num_heads, "window_size": ctx.window_size}
    mixer = _call(block_type.cls, mixer_context, opts)
    return TokenBlock(
        ctx.dim, mixer, mlp_ratio=ctx.mlp_ratio, drop_path=ctx.drop_path, layer_scale=ctx.layer_scale
    )


def _context_kwargs(ctx: BlockContext, layer_scale: float | None) -> dict[str, Any]:
    return {
        "dim": ctx.dim,
        "num_heads": ctx.num_heads,
        "window_size": ctx.window_size,
        "mlp_ratio": ctx.mlp_ratio,
        "drop_path": ctx.drop_path,
        "layer_scale": layer_scale,
    }


def _call(cls: Callable[..., nn.Module], context: dict[str, Any], opts: dict[str, Any]) -> nn.Module:
    """Call `cls` with its options plus the context values its signature accepts."""
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in context.items() if (takes_any or k in params) and k not in opts}
    return cls(**kwargs, **opts)


def _valid_symbol(symbol: str) -> bool:
    return (
        isinstance(symbol, str)
        and len(symbol) >= 1
        and symbol[0].isascii()
        and symbol[0].isupper()
        and all(c.isascii() and c.islower() for c in symbol[1:])
    )


def _ensure_builtins() -> None:
    """Import the built-in blocks so C, M and A are registered even when only this module was imported."""
    if not _REGISTRY or not {"C", "M", "A"} <= _REGISTRY.keys():
        import blocks.builtin  # noqa: F401  (registers C, M, A)
