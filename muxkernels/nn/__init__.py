"""Drop-in layers: the multiplexers (sequences, images), the demultiplexers and the published
task heads."""

from .demultiplexers import IndexDemultiplexer, IndexPosDemultiplexer, MLPDemultiplexer
from .feature_demultiplexer import FeatureDemultiplexer
from .heads import (
    IndexDemuxRetrievalHead,
    IndexDemuxSequenceClassificationHead,
    IndexDemuxTokenClassificationHead,
    MLPDemuxRetrievalHead,
    MLPDemuxSequenceClassificationHead,
    MLPDemuxTokenClassificationHead,
)
from .image_multiplexer import IMAGE_MUX_MODES, ImageMultiplexer
from .multiplexer import MUXING_VARIANTS, Multiplexer

__all__ = [
    "IMAGE_MUX_MODES",
    "MUXING_VARIANTS",
    "FeatureDemultiplexer",
    "ImageMultiplexer",
    "IndexDemultiplexer",
    "IndexDemuxRetrievalHead",
    "IndexDemuxSequenceClassificationHead",
    "IndexDemuxTokenClassificationHead",
    "IndexPosDemultiplexer",
    "MLPDemultiplexer",
    "MLPDemuxRetrievalHead",
    "MLPDemuxSequenceClassificationHead",
    "MLPDemuxTokenClassificationHead",
    "Multiplexer",
]
