"""rater: a stream-processing usage rater for PSTN calling."""

__version__ = "0.1.0"
