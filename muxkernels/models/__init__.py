"""Multiplexed models: the wrapper around any encoder, its checkpoints, the retrieval warm-up."""

from .encoder import Embeddings, InputsEmbedsEncoder, TransformerEncoder, as_encoder, hf_encoder
from .losses import MuxOutput
from .multiplexed import TASKS, Encoded, MultiplexedModel, MuxConfig
from .retrieval import (
    retrieval_accuracy,
    retrieval_loss,
    retrieval_targets,
    throughput,
    train_retrieval,
)

__all__ = [
    "TASKS",
    "Embeddings",
    "Encoded",
    "InputsEmbedsEncoder",
    "MultiplexedModel",
    "MuxConfig",
    "MuxOutput",
    "TransformerEncoder",
    "as_encoder",
    "hf_encoder",
    "retrieval_accuracy",
    "retrieval_loss",
    "retrieval_targets",
    "throughput",
    "train_retrieval",
]
