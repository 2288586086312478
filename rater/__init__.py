"""rater: a stream-processing usage rater for PSTN calling."""

from rater._compiled import CORE_BUILD

__version__ = "0.1.0"
__all__ = ["CORE_BUILD", "__version__"]
