"""hybridlab: declarative hybrid Mamba/Transformer/CNN vision backbones, measured studies and reports.

The importable packages are `blocks` (grammar, blocks, models), `search_space`, `studies`, `reports`;
this package holds what they share (errors) plus the command line and the measurement code.
"""

__version__ = "0.1.0"
