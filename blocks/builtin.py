"""Registers the built-in blocks: C (MambaVision conv block), M (MambaVision mixer), A (self-attention),
V (Vim bidirectional Mamba), S (VMamba SS2D), Md (Mamba-2 SSD), G (MambaOut gated CNN) and H (parallel
attention + selective-scan head).

The option schemas here are the grammar's contract; the classes live in their own small files.
"""

from blocks.attention import Attention
from blocks.conv import ConvBlock
from blocks.mixer import MambaVisionMixer
from blocks.options import Option
from blocks.registry import register_block

register_block(
    "C",
    ConvBlock,
    kind="conv",
    help="MambaVision conv block: conv3x3-BN-GELU(tanh)-conv3x3-BN + residual",
)

register_block(
    "M",
    MambaVisionMixer,
    kind="mixer",
    options=[
        Option("d_state", int, 8, min=1, max=256, help="SSM state size N"),
        Option("d_conv", int, 3, min=1, max=16, help="depthwise conv1d kernel size"),
        Option("expand", int, 1, min=1, max=8, help="inner width = expand * dim"),
        Option("conv", str, "regular", choices=("regular", "causal"), help="SSM-branch conv1d: 'same' or left-padded causal"),
        Option(
            "branch",
            str,
            "concat",
            choices=("concat", "gate", "none"),
            help="symmetric branch: concatenated (MambaVision), gating y*silu(z) (Mamba), or absent",
        ),
    ],
    help="MambaVision mixer in the standard block (Table 4 variants via conv= and branch=)",
)

register_block(
    "A",
    Attention,
    kind="mixer",
    options=[Option("qkv_bias", bool, True, help="bias on the qkv projection")],
    help="multi-head self-attention (SDPA) in the standard block, inside windows",
)

from blocks.vim import BiMambaMixer  # noqa: E402  (appended registration)

register_block(
    "V",
    BiMambaMixer,
    kind="mixer",
    options=[
        Option("d_state", int, 16, min=1, max=256, help="SSM state size N"),
        Option("expand", int, 2, min=1, max=8, help="inner width = expand * dim"),
        Option("d_conv", int, 4, min=1, max=16, help="causal depthwise conv1d kernel size (each direction)"),
        Option(
            "combine",
            str,
            "average",
            choices=("average", "sum"),
            help="how the two directions meet: averaged (Vim's released models) or summed",
        ),
    ],
    help="Vim bidirectional Mamba (bimamba v2): forward + backward scan, shared in/out projections",
)

from blocks.ss2d import SS2D  # noqa: E402  (appended registration)

register_block(
    "S",
    SS2D,
    kind="mixer",
    options=[
        Option("d_state", int, 16, min=1, max=256, help="SSM state size N"),
        Option("ssm_ratio", float, 2.0, min=0.25, max=8.0, help="inner width = ssm_ratio * dim"),
        Option("d_conv", int, 3, choices=(1, 3, 5, 7, 9, 11, 13, 15), help="depthwise conv2d kernel; 1 = no conv"),
        Option("dt_rank", int, 0, min=0, max=1024, help="rank of the dt projection; 0 = ceil(dim/16)"),
    ],
    help="VMamba SS2D: 2-D selective scan in 4 directions (one grouped scan) on the window's map",
)

# -- mixers the field compares against (each in its own file) ---------------------------------------
from blocks.gated_cnn import GatedCNNBlock  # noqa: E402

register_block(
    "G",
    GatedCNNBlock,
    kind="token",
    options=[
        Option("kernel_size", int, 7, min=1, max=31, help="depthwise conv2d kernel on the window's map"),
        Option("expansion_ratio", float, 8 / 3, min=0.25, max=16.0, help="hidden width = expansion_ratio * dim"),
        Option("conv_ratio", float, 1.0, min=0.01, max=16.0, help="share of dim convolved (the rest is identity)"),
    ],
    help="MambaOut gated CNN block (timm GatedConvBlock names): no SSM, depthwise conv2d on the window's map",
)

from blocks.ssd import Mamba2Mixer  # noqa: E402

register_block(
    "Md",
    Mamba2Mixer,
    kind="mixer",
    options=[
        Option("d_state", int, 64, min=1, max=512, help="SSM state size N (shared by all heads)"),
        Option("headdim", int, 64, min=1, max=1024, help="channels per head; expand*dim must be a multiple"),
        Option("expand", int, 2, min=1, max=8, help="inner width = expand * dim"),
        Option("chunk", int, 64, min=1, max=4096, help="SSD chunk length (tokens)"),
        Option("d_conv", int, 4, min=1, max=16, help="causal depthwise conv1d kernel over x, B, C"),
    ],
    help="Mamba-2 (SSD) mixer, mamba-ssm Mamba2 names; chunked PyTorch SSD on CPU (mamba-ssm kernel on CUDA "
    "when installed, else the same chunked PyTorch path: no fused kernel)",
)

from blocks.parallel_head import ParallelHybridHead  # noqa: E402

register_block(
    "H",
    ParallelHybridHead,
    kind="mixer",
    options=[
        Option("attn_ratio", float, 0.5, min=0.01, max=0.99, help="share of the width given to attention heads"),
        Option("d_state", int, 8, min=1, max=256, help="SSM state size N of the scan branch"),
        Option("d_conv", int, 3, min=1, max=16, help="depthwise conv1d kernel of the scan branch"),
    ],
    help="parallel hybrid head (Hymba / Falcon-H1): attention and a selective scan on the same input, each "
    "RMS-normalised and scaled per channel, then one out-projection; the scan runs on blocks.scan (the compiled "
    "kernel, or the slower blocked PyTorch scan where it does not build)",
)
