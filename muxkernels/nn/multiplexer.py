"""The multiplexer layer: a drop-in for the published DataMUX ``instance_embedding`` mixing."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from .. import transforms
from .._backend import Backend
from .._checks import as_number, layer_sizes
from ..ops import hadamard_mux, lowrank_ortho_mux, ortho_mux
from ..prefix import pad_batch
from ..reference import lowrank_dense

MuxingVariant = Literal[
    "gaussian_hadamard", "binary_hadamard", "random_ortho", "random_ortho_low_rank"
]
MUXING_VARIANTS: tuple[str, ...] = (
    "gaussian_hadamard",
    "binary_hadamard",
    "random_ortho",
    "random_ortho_low_rank",
)


class Multiplexer(nn.Module):
    """Mix N inputs into one: (B, L, d) or (B', N, L, d) → (B', L, d).

    Variants (the published ``muxing_variant`` names):
    - ``gaussian_hadamard``: x = (1/N) Σ_i v_i ⊙ E_i, v_i = norm · z_i/‖z_i‖.
    - ``binary_hadamard``: the same with 0/1 chunk masks (overlap ``binary_hadamard_epsilon``).
    - ``random_ortho``: x = N^(-1/2) Σ_i P[i] E_i, P[i] Haar orthogonal.
    - ``random_ortho_low_rank``: P[i] = U[:, S_i] H[:, S_i]ᵀ, computed in factored form.

    Parameters: ``instance_embedding`` ((N, d) or (N, d, d), the published name) or, for
    the frozen low-rank variant, ``lowrank_u`` and ``lowrank_h`` (d, d); a published dense
    low-rank ``instance_embedding`` loads too and is factored on load, exactly or with an
    error naming the singular value it would drop. Transforms are frozen unless
    ``learn_muxing=True``; a learned low-rank transform is kept dense (N, d, d), as the
    published model learns it (training does not keep it low-rank).

    With ``pad=True`` a batch that is not a multiple of N gets its last group filled with
    copies of its last row; drop the extra outputs with ``outputs[:B]``. Without it, such a
    batch is an error.
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        muxing_variant: MuxingVariant = "gaussian_hadamard",
        *,
        learn_muxing: bool = False,
        gaussian_hadamard_norm: float = 1.0,
        binary_hadamard_epsilon: float = 0.0,
        generator: transforms.GeneratorLike = None,
        pad: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if muxing_variant not in MUXING_VARIANTS:
            raise ValueError(
                f"muxing_variant must be one of {MUXING_VARIANTS}, got {muxing_variant!r}"
            )
        num_instances, hidden_size, _ = layer_sizes(num_instances, hidden_size)
        gaussian_hadamard_norm = as_number(
            "gaussian_hadamard_norm", gaussian_hadamard_norm, 0.0, above=True
        )
        binary_hadamard_epsilon = as_number(
            "binary_hadamard_epsilon", binary_hadamard_epsilon, 0, 1
        )
        self.num_instances = num_instances
        self.hidden_size = hidden_size
        self.muxing_variant = muxing_variant
        self.pad = pad
        self.backend = backend
        n, d = num_instances, hidden_size
        self.factored = muxing_variant == "random_ortho_low_rank" and not learn_muxing
        if muxing_variant == "random_ortho_low_rank":
            u, h = transforms.lowrank_factors(n, d, generator=generator)
            if self.factored:
                self.lowrank_u = nn.Parameter(u, requires_grad=False)
                self.lowrank_h = nn.Parameter(h, requires_grad=False)
                return
            init = lowrank_dense(u, h, n)
        elif muxing_variant == "gaussian_hadamard":
            init = transforms.gaussian_vectors(n, d, gaussian_hadamard_norm, generator=generator)
        elif muxing_variant == "binary_hadamard":
            init = transforms.binary_vectors(n, d, binary_hadamard_epsilon)
        else:
            init = transforms.ortho_matrices(n, d, generator=generator)
        self.instance_embedding = nn.Parameter(init, requires_grad=learn_muxing)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Multiplex ``embeddings`` (B, L, d) or (B', N, L, d) into (B', L, d)."""
        if self.pad and embeddings.dim() == 3:
            embeddings, _ = pad_batch(embeddings, self.num_instances)
        if self.factored:
            return lowrank_ortho_mux(
                embeddings,
                self.lowrank_u,
                self.lowrank_h,
                num_instances=self.num_instances,
                backend=self.backend,
            )
        if self.instance_embedding.dim() == 3:
            return ortho_mux(embeddings, self.instance_embedding, backend=self.backend)
        return hadamard_mux(embeddings, self.instance_embedding, backend=self.backend)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Low-rank transforms load from either form: dense → factors (exact or an error)
        for the frozen layer, factors → dense for the learned one."""
        dense_key, factor_keys = (
            prefix + "instance_embedding",
            (prefix + "lowrank_u", prefix + "lowrank_h"),
        )
        if self.factored and dense_key in state_dict:
            u, h = transforms.lowrank_factors_from_dense(state_dict.pop(dense_key))
            state_dict[factor_keys[0]], state_dict[factor_keys[1]] = u, h
        low_rank = self.muxing_variant == "random_ortho_low_rank"
        if low_rank and not self.factored and all(k in state_dict for k in factor_keys):
            u, h = (state_dict.pop(k) for k in factor_keys)
            state_dict[dense_key] = lowrank_dense(u, h, self.num_instances)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def published_transform(self) -> torch.Tensor:
        """The published ``instance_embedding``: (N, d) vectors or (N, d, d) matrices (the
        dense form of a factored low-rank transform)."""
        if self.factored:
            return lowrank_dense(self.lowrank_u, self.lowrank_h, self.num_instances)
        return self.instance_embedding

    def extra_repr(self) -> str:
        return (
            f"num_instances={self.num_instances}, hidden_size={self.hidden_size}, "
            f"muxing_variant={self.muxing_variant!r}, pad={self.pad}, backend={self.backend!r}"
        )
