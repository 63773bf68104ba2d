"""What the sm_90 machine code of a kernel says: resources, spills, loops and access widths.

Input is the text of ``cuobjdump -res-usage`` and the SASS listing of ``cuobjdump -sass`` or
``nvdisasm -c`` (the tools Triton ships, so no GPU driver and no full CUDA toolkit is
needed). For each function:

- registers per thread, stack frame and local memory bytes (a frame or any LDL/STL
  instruction means spilled registers: none of our kernels has local arrays), static
  shared memory;
- the hot loop: the instructions inside backward branches (``BRA`` to a lower address,
  the end-of-kernel self-branch excluded); a kernel without loops is all hot;
- in the hot loop, the global loads and stores by width in bits (``LDG.E.128`` is 128,
  ``LDG.E.U16`` 16, ``LDG.E`` 32; ``LDGSTS`` cp.async copies count as loads), the global
  bytes one thread loads per pass, shared-memory traffic and barriers (``BAR.SYNC``).
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field

_FUNCTION = re.compile(r"^\s*Function\s*:?\s*(\S+?):?\s*$|^//-+ \.text\.(\S+)\s+-+$")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_RESOURCES = re.compile(
    r"REG:(?P<reg>\d+)\s+STACK:(?P<stack>\d+)\s+SHARED:(?P<shared>\d+)\s+LOCAL:(?P<local>\d+)"
)
_INSTRUCTION = re.compile(r"^\s*/\*(?P<addr>[0-9a-f]{4,})\*/\s+(?P<text>[^;]*);")
_BRANCH = re.compile(r"\bBRA(?:\.\w+)*\s+(?:`\((?P<label>\.L_x_\d+)\)|0x(?P<target>[0-9a-f]+))")
_WIDTHS = {"128": 128, "64": 64, "U16": 16, "S16": 16, "U8": 8, "S8": 8}
GLOBAL_LOADS = ("LDG", "LDGSTS")
GLOBAL_STORES = ("STG",)
SPILLS = ("LDL", "STL")


@dataclass
class Function:
    """One kernel's resources and the memory instructions of its hot loop."""

    name: str
    registers: int = 0
    stack_bytes: int = 0
    local_bytes: int = 0
    shared_bytes: int = 0
    spill_instructions: int = 0
    loops: int = 0
    loads: Counter = field(default_factory=Counter)  # hot-loop global loads by width (bits)
    stores: Counter = field(default_factory=Counter)  # hot-loop global stores by width
    shared_accesses: int = 0  # hot-loop LDS/STS/LDSM/STSM
    barriers: int = 0  # hot-loop BAR.SYNC

    @property
    def spilled(self) -> bool:
        return self.stack_bytes > 0 or self.local_bytes > 0 or self.spill_instructions > 0

    @property
    def load_bytes_per_pass(self) -> int:
        """Global bytes one thread loads per pass of the hot loop (all its loads issued)."""
        return sum(width // 8 * count for width, count in self.loads.items())


def width_of(opcode: str) -> int:
    """Access width in bits of a memory opcode: ``LDG.E.128`` → 128, ``STG.E`` → 32."""
    for part in opcode.split(".")[1:]:
        if part in _WIDTHS:
            return _WIDTHS[part]
    return 32


def _opcode(text: str) -> str:
    """The opcode of an instruction, predicate dropped: ``@!P1 LDG.E.U16 R2, …`` → LDG.E.U16."""
    words = text.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0] if words else ""


def _hot_ranges(instructions: list[tuple[int, str]], labels: dict[str, int]) -> list[tuple]:
    """Address ranges [target, branch] of the backward branches (loops)."""
    ranges = []
    for addr, text in instructions:
        match = _BRANCH.search(text)
        if match is None:
            continue
        if match.group("target") is not None:
            target = int(match.group("target"), 16)
        else:
            target = labels.get(match.group("label"), addr)
        if target < addr:
            ranges.append((target, addr))
    return ranges


def _analyse(
    function: Function, instructions: list[tuple[int, str]], labels: dict[str, int]
) -> None:
    ranges = _hot_ranges(instructions, labels)
    function.loops = len(ranges)
    for addr, text in instructions:
        opcode = _opcode(text)
        root = opcode.split(".")[0]
        if root in SPILLS:
            function.spill_instructions += 1
        hot = not ranges or any(lo <= addr <= hi for lo, hi in ranges)
        if not hot:
            continue
        if root in GLOBAL_LOADS:
            function.loads[width_of(opcode)] += 1
        elif root in GLOBAL_STORES:
            function.stores[width_of(opcode)] += 1
        elif root in ("LDS", "STS", "LDSM", "STSM"):
            function.shared_accesses += 1
        elif opcode.startswith("BAR.SYNC") or opcode == "BAR":
            function.barriers += 1


def _name(match: re.Match) -> str:
    return match.group(1) or match.group(2)


def parse(res_usage: str, sass: str) -> dict[str, Function]:
    """Every function of a cubin or fat binary, by demangled name."""
    lines = (res_usage + "\n" + sass).splitlines()
    demangle = demangle_all([_name(m) for line in lines if (m := _FUNCTION.match(line))]).get
    functions: dict[str, Function] = {}
    current: Function | None = None
    for line in res_usage.splitlines():
        match = _FUNCTION.match(line)
        if match:
            name = demangle(_name(match))
            current = functions.setdefault(name, Function(name))
            continue
        match = _RESOURCES.search(line)
        if match and current is not None:
            current.registers = int(match["reg"])
            current.stack_bytes = int(match["stack"])
            current.local_bytes = int(match["local"])
            current.shared_bytes = int(match["shared"])
    body: list[tuple[int, str]] = []
    labels: dict[str, int] = {}
    pending: list[str] = []  # labels waiting for the address of the next instruction
    current = None
    for line in [*sass.splitlines(), "Function : <end>"]:
        match = _FUNCTION.match(line)
        if match:
            if current is not None:
                _analyse(current, body, labels)
            name = demangle(_name(match))
            current = functions.setdefault(name, Function(name)) if name != "<end>" else None
            body, labels, pending = [], {}, []
            continue
        match = _LABEL.match(line.strip())
        if match:
            pending.append(match.group(1))
            continue
        match = _INSTRUCTION.match(line)
        if match:
            addr = int(match["addr"], 16)
            labels.update(dict.fromkeys(pending, addr))
            pending = []
            body.append((addr, match["text"].strip()))
    return functions


def demangle_all(names: list[str]) -> dict[str, str]:
    """name → demangled name (one c++filt call; names it cannot read map to themselves)."""
    table = {name: name for name in names}
    mangled = sorted({name for name in names if name.startswith("_Z")})
    if mangled:
        out = subprocess.run(["c++filt", *mangled], capture_output=True, text=True, check=True)
        table.update(zip(mangled, out.stdout.splitlines(), strict=True))
    table["<end>"] = "<end>"
    return table


def format_widths(counts: Counter) -> str:
    """``128×4 16×2``: access counts by width, widest first; ``-`` when there are none."""
    if not counts:
        return "-"
    return " ".join(f"{width}×{counts[width]}" for width in sorted(counts, reverse=True))
