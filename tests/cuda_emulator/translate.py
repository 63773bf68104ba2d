"""Rewrites a kernel file of csrc/ for the CPU emulator (emu.h): kernel launches
``k<<<grid, block, smem, stream>>>(args)`` become ``emu::launch(grid, block, smem, stream,
emu::kernel_name<&k>(), [&] { k(args); })``, ``__shared__`` arrays become function
statics (one block runs at a time), ``extern __shared__`` arrays point into the block's
dynamic shared memory, and ``__launch_bounds__`` goes.

Usage: python3 translate.py KERNEL.cu OUT.cpp
"""

from __future__ import annotations

import re
import sys


def matching(text: str, start: int, opening: str, closing: str) -> int:
    """Index of the bracket that closes the one at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced {opening} at {start}")


def translate(text: str) -> str:
    while (i := text.find("__launch_bounds__(")) >= 0:
        end = matching(text, i + len("__launch_bounds__"), "(", ")")
        text = text[:i] + text[end + 1 :]
    text = re.sub(
        r"extern __shared__ (\w+) (\w+)\[\];",
        r"\1* \2 = reinterpret_cast<\1*>(::emu::dynamic_smem());",
        text,
    )
    text = text.replace("__shared__", "static")
    while (i := text.find("<<<")) >= 0:
        start = max(text.rfind(c, 0, i) for c in ";{}") + 1
        config_end = text.find(">>>", i)
        args_end = matching(text, config_end + 3, "(", ")")
        kernel = text[start:i]
        indent = kernel[: len(kernel) - len(kernel.lstrip())]
        config = text[i + 3 : config_end]
        args = text[config_end + 4 : args_end]
        name = f"::emu::kernel_name<&{kernel.strip()}>()"
        call = f"::emu::launch({config}, {name}, [&]() {{ {kernel.strip()}({args}); }})"
        text = text[:start] + indent + call + text[args_end + 1 :]
    return '#include "emu.h"\n' + text


if __name__ == "__main__":
    source, target = sys.argv[1:3]
    with open(source) as f:
        translated = translate(f.read())
    with open(target, "w") as f:
        f.write(translated)
