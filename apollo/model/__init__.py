"""The Apollo generator and its three stages (paper Fig. 1)."""

from .band_reconstruction import BandReconstruction
from .band_sequence import BandRoformer, BandSequenceBlock, TCNBlock
from .band_split import BandSplit, gain_shape
from .generator import Apollo

__all__ = ["Apollo", "BandSplit", "BandSequenceBlock", "BandRoformer", "TCNBlock", "BandReconstruction", "gain_shape"]
