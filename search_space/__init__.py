"""Search spaces over hybrid patterns: families, free layouts, block options, widths, constraints."""

from search_space.constraints import Constraints
from search_space.families import FAMILIES, TABLE5, stage_layout
from search_space.space import Candidate, SearchSpace

__all__ = ["FAMILIES", "TABLE5", "Candidate", "Constraints", "SearchSpace", "stage_layout"]
