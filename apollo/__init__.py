"""apollo: restores MP3-damaged music with the Apollo band-sequence generator."""

from .api import Restorer
from .model import Apollo
from .model.config import ApolloConfig
from .pretrained import load_model
from .states import CheckpointError, UnsafeCheckpointError, save_checkpoint
from .streaming import StreamingRestorer

__version__ = "0.1.0"
__all__ = ["Apollo", "ApolloConfig", "Restorer", "StreamingRestorer", "load_model", "save_checkpoint",
           "CheckpointError", "UnsafeCheckpointError"]
