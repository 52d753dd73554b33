"""Block grammar, block registry, model builder and MambaVision presets.

    from blocks import parse, ModelSpec
    model = ModelSpec.create("C | C*3 | M*4 A*4 | M*2 A*2", dim=80).build()
"""

# The model builder, presets (registers `hybrid` and `mambavision_*` with timm) and checkpoint loading.
from blocks.checkpoint import LoadResult, load_official_checkpoint  # noqa: E402
from blocks.grammar import BlockSpec, Pattern, canonical, parse
from blocks.model import HybridNet  # noqa: E402
from blocks.options import Option
from blocks.presets import OFFICIAL_NAMES, PRESETS, official_pattern, preset_spec  # noqa: E402
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
    "HybridNet",
    "LoadResult",
    "OFFICIAL_NAMES",
    "PRESETS",
    "load_official_checkpoint",
    "official_pattern",
    "preset_spec",
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
