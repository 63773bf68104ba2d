"""The sm_90 (H100 / H200) limits the compile gate checks against, and what they imply.

Occupancy follows the CUDA occupancy calculator for compute capability 9.0: registers
are allocated per warp in units of 256 (so ``ceil(32·regs / 256)·256`` per warp), shared
memory in units of 128 bytes plus 1 KiB the driver reserves per block, at most 64 warps
and 32 blocks per SM. A block must fit in 227 KiB of shared memory; a kernel launched
without the opt-in attribute gets 48 KiB, which is what our launchers use.

Loads in flight: keeping an HBM3e stack busy needs bandwidth × latency bytes requested and
not yet returned. On an H200 (4.8 TB/s, about 600 ns under load, 132 SMs) that is
4.8e12 · 600e-9 / 132 ≈ 21.8 KB per SM; ``IN_FLIGHT_TARGET`` asks for ~32 KB to leave
room for uneven issue. A memory-bound kernel gets there with
resident warps × 32 lanes × bytes each thread loads per pass of its hot loop (the
loads of one pass issue back to back before their first use, which is how every kernel
here is written).
"""

from __future__ import annotations

from dataclasses import dataclass

SMS = 132
REGISTERS_PER_SM = 65536
REGISTER_UNIT = 256  # registers per warp are allocated in multiples of this
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32
SHARED_PER_SM = 228 * 1024
SHARED_PER_BLOCK = 227 * 1024  # with the opt-in attribute
SHARED_PER_BLOCK_DEFAULT = 48 * 1024  # without it (our launchers never opt in)
SHARED_UNIT = 128
SHARED_RESERVED_PER_BLOCK = 1024
BANDWIDTH = 4.8e12  # bytes/s, H200 HBM3e
LATENCY = 600e-9  # seconds, a loaded DRAM access
IN_FLIGHT_TARGET = 32 * 1024  # bytes per SM the memory-bound kernels aim for


@dataclass(frozen=True)
class Occupancy:
    """Resident blocks and warps of one kernel on one SM, and what limits them."""

    blocks: int
    warps: int
    limit: str  # "registers", "shared memory", "warps", "blocks" or "none fits"


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def occupancy(registers: int, warps_per_block: int, shared_bytes: int) -> Occupancy:
    """Blocks and warps resident per SM for a kernel using ``registers`` per thread,
    ``warps_per_block`` warps and ``shared_bytes`` of shared memory per block."""
    regs_per_warp = _round_up(max(registers, 1) * 32, REGISTER_UNIT)
    by_registers = (REGISTERS_PER_SM // regs_per_warp) // warps_per_block
    shared = _round_up(shared_bytes, SHARED_UNIT) + SHARED_RESERVED_PER_BLOCK
    by_shared = SHARED_PER_SM // shared
    by_warps = MAX_WARPS_PER_SM // warps_per_block
    limits = {
        "registers": by_registers,
        "shared memory": by_shared,
        "warps": by_warps,
        "blocks": MAX_BLOCKS_PER_SM,
    }
    limit = min(limits, key=limits.get)
    blocks = limits[limit]
    return Occupancy(blocks, blocks * warps_per_block, limit if blocks else "none fits")


def in_flight_per_sm(resident_warps: int, load_bytes_per_thread: int) -> int:
    """Bytes of global loads one SM can have in flight (see the module docstring)."""
    return resident_warps * 32 * load_bytes_per_thread


def needed_in_flight() -> float:
    """Bandwidth × latency per SM: the bytes that must be in flight to saturate HBM."""
    return BANDWIDTH * LATENCY / SMS
