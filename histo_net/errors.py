"""Typed exceptions. Every error a user can cause is a ``HistoNetError``.

Messages are one line and name the file (or config key) and the problem, so the
CLI can print ``str(exc)`` without a traceback.
"""

from __future__ import annotations


class HistoNetError(Exception):
    """Base class for all expected (user- or data-caused) failures."""

    #: short machine-readable kind used in manifests and reports
    kind: str = "error"


class SlideOpenError(HistoNetError):
    """The file cannot be opened as a slide (missing, empty, truncated, unsupported)."""

    kind = "slide_open"


class SlideReadError(HistoNetError):
    """A region could not be read from an opened slide, even after reopening once."""

    kind = "slide_read"


class MissingMPPError(HistoNetError):
    """The slide's microns-per-pixel is unknown or implausible; pass ``--mpp``."""

    kind = "missing_mpp"


class NoTissueError(HistoNetError):
    """Tissue detection found no (or too little) tissue to tile."""

    kind = "no_tissue"


class TilesFileError(HistoNetError):
    """A tile-coordinates h5 is missing, unreadable or inconsistent."""

    kind = "tiles_file"


class FeaturesFileError(HistoNetError):
    """A features h5 is missing, unreadable or inconsistent."""

    kind = "features_file"


class ConfigError(HistoNetError):
    """Invalid configuration, manifest or command-line usage."""

    kind = "config"


class ModelBundleError(HistoNetError):
    """A model bundle or checkpoint is missing, corrupt, unsafe or incompatible."""

    kind = "model_bundle"


class NonFiniteLossError(HistoNetError, FloatingPointError):
    """The training loss became NaN or infinite (learning rate too high, bad input, overflow)."""

    kind = "non_finite_loss"


class NotAFileError(SlideOpenError):
    """The input is not a regular file (named pipe, device, socket, symlink loop, folder)."""

    kind = "not_a_file"


class SlideTimeoutError(HistoNetError):
    """A slide's open, tiling or thumbnail step ran past its wall-clock limit (``--slide-timeout``)."""

    kind = "slide_timeout"


class SlideTooLargeError(SlideOpenError):
    """Building the thumbnail would read more pixels than the budget allows and no coarser
    source exists (e.g. a small file declaring a gigantic single level)."""

    kind = "slide_too_large"


class ResolutionMismatchError(MissingMPPError):
    """Tiles would be upsampled beyond the allowed factor (slide coarser than the target mpp)."""

    kind = "resolution_mismatch"
