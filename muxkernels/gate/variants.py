"""One row of the gate: a compiled kernel variant, the configs that use it, and its facts.

A *variant* is one piece of machine code: a Triton specialisation (one cubin) or a CUDA
template instantiation. It knows its resources from the SASS (``sass.Function``), its
block size and shared memory, and, from those, its occupancy and loads in flight on an
H200. The rules of the gate (``problems``) are checked per variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import hopper, sass

# Kernels bound by the bytes they move, not by arithmetic: for bf16 data at d = 768,
# every global load and store in their hot loops must be 128 bits wide and the SM must
# keep IN_FLIGHT_TARGET bytes of loads in flight.
MEMORY_BOUND = (
    "_hadamard_mux_fwd_kernel",
    "_hadamard_mux_bwd_kernel",
    "_token_fwd_kernel",
    "_token_bwd_kernel",
    "_rows_fwd_kernel",
    "_rows_bwd_kernel",
    "_mlp_fwd_kernel",
    "_mlp_bwd_kernel",
    "hadamard_mux_fwd_kernel",
    "hadamard_mux_bwd_kernel",
    "embed_mux_fwd_kernel",
    "demux_gather_fwd_kernel",
    "demux_gather_bwd_kernel",
)
VECTOR_CHECKED = ("bf16 ", "d=768")  # the configs the width and in-flight rules apply to
# Kernels whose hot loop also reads int64 ids or indices (a 64-bit load, the same for every
# thread of a row): 64-bit loads are allowed there, nothing else narrower than 128 bits.
INDEX_READERS = (
    "embed_mux_fwd_kernel",
    "demux_gather_fwd_kernel",
    "demux_gather_bwd_kernel",
    "_rows_fwd_kernel",
    "_rows_bwd_kernel",
)


@dataclass
class Variant:
    backend: str  # "triton" or "cuda"
    kernel: str  # function name (Triton) or template (CUDA), without arguments
    specialisation: str  # constexprs / template arguments
    function: sass.Function
    warps: int = 0  # per block (0: never launched at the benchmark shapes)
    shared_bytes: int = 0  # static + dynamic per block
    configs: list[str] = field(default_factory=list)
    grids: set[tuple] = field(default_factory=set)
    error: str = ""

    @property
    def occupancy(self) -> hopper.Occupancy | None:
        if not self.warps:
            return None
        return hopper.occupancy(self.function.registers, self.warps, self.shared_bytes)

    @property
    def in_flight(self) -> int:
        """Bytes of loads in flight per SM (resident warps × 32 × bytes per pass)."""
        occ = self.occupancy
        return hopper.in_flight_per_sm(occ.warps, self.function.load_bytes_per_pass) if occ else 0

    def vector_checked(self) -> bool:
        return self.kernel in MEMORY_BOUND and any(
            all(part in c for part in VECTOR_CHECKED) and "+fp32" not in c for c in self.configs
        )

    def problems(self) -> list[str]:
        """What fails the gate for this variant, one line each."""
        name = f"{self.backend} {self.kernel}[{self.specialisation}]"
        found = []
        if self.error:
            found.append(f"{name}: compile error: {self.error}")
            return found
        f = self.function
        if f.spilled:
            found.append(
                f"{name}: spills registers ({f.stack_bytes} B stack, {f.local_bytes} B local, "
                f"{f.spill_instructions} local loads/stores)"
            )
        limit = (
            hopper.SHARED_PER_BLOCK
            if self.backend == "triton"
            else (hopper.SHARED_PER_BLOCK_DEFAULT)
        )
        if self.shared_bytes > limit:
            found.append(f"{name}: {self.shared_bytes} B shared memory per block, over {limit}")
        occ = self.occupancy
        if occ is not None and occ.blocks == 0:
            found.append(f"{name}: no block fits on an SM")
        if self.vector_checked():
            narrow = f.loads + f.stores
            if self.kernel in INDEX_READERS:
                narrow[64] -= f.loads[64]
            narrow = {w: n for w, n in narrow.items() if w < 128 and n > 0}
            if narrow:
                widths = sass.format_widths(sass.Counter(narrow))
                found.append(f"{name}: hot-loop global accesses narrower than 128 bits: {widths}")
            if occ is not None and self.in_flight < hopper.IN_FLIGHT_TARGET:
                found.append(
                    f"{name}: {self.in_flight // 1024} KiB of loads in flight per SM "
                    f"({occ.warps} warps × 32 × {f.load_bytes_per_pass} B), "
                    f"under {hopper.IN_FLIGHT_TARGET // 1024} KiB"
                )
        return found
