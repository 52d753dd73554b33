"""Block grammar, block registry, model builder and MambaVision presets.

    from blocks import parse, ModelSpec
    model = ModelSpec.create("C | C*3 | M*4 A*4 | M*2 A*2", dim=80).build()
"""

from blocks.grammar import BlockSpec, Pattern, canonical, parse
from blocks.options import Option
from blocks.registry import (
    BlockContext,
    BlockType,
    block_types,
    build_block,
    get_block_type,
    known_symbols,
    register_block,
    unregister_block,
)
from blocks.spec import ModelSpec

__all__ = [
    "BlockContext",
    "BlockSpec",
    "BlockType",
    "ModelSpec",
    "Option",
    "Pattern",
    "block_types",
    "build_block",
    "canonical",
    "get_block_type",
    "known_symbols",
    "parse",
    "register_block",
    "unregister_block",
]
