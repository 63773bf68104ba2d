"""Multiplexed models: the wrapper around any encoder, its checkpoints, the retrieval warm-up;
multiplexed image classifiers (CNN, MLP) and their training."""

from .encoder import Embeddings, InputsEmbedsEncoder, TransformerEncoder, as_encoder, hf_encoder
from .image_training import accuracy, images_per_second, train_classifier
from .losses import MuxOutput
from .multiplexed import TASKS, Encoded, MultiplexedModel, MuxConfig
from .retrieval import (
    retrieval_accuracy,
    retrieval_loss,
    retrieval_targets,
    throughput,
    train_retrieval,
)
from .vision import MultiplexedCNN, MultiplexedMLP

__all__ = [
    "TASKS",
    "Embeddings",
    "Encoded",
    "InputsEmbedsEncoder",
    "MultiplexedCNN",
    "MultiplexedMLP",
    "MultiplexedModel",
    "MuxConfig",
    "MuxOutput",
    "TransformerEncoder",
    "accuracy",
    "as_encoder",
    "hf_encoder",
    "images_per_second",
    "retrieval_accuracy",
    "retrieval_loss",
    "retrieval_targets",
    "throughput",
    "train_classifier",
    "train_retrieval",
]
