"""Drop-in layers: the multiplexer, the demultiplexers and the published task heads."""

from .demultiplexers import IndexDemultiplexer, IndexPosDemultiplexer, MLPDemultiplexer
from .heads import (
    IndexDemuxRetrievalHead,
    IndexDemuxSequenceClassificationHead,
    IndexDemuxTokenClassificationHead,
    MLPDemuxRetrievalHead,
    MLPDemuxSequenceClassificationHead,
    MLPDemuxTokenClassificationHead,
)
from .multiplexer import MUXING_VARIANTS, Multiplexer

__all__ = [
    "MUXING_VARIANTS",
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
