"""The sm_90 compile gate (``muxkernels gate``): its SASS reading, its rules, and that it fails.

The Triton parts compile for sm_90 without a GPU (Triton ships ptxas, cuobjdump and
nvdisasm); they are skipped only where triton is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from muxkernels.gate import hopper, sass
from muxkernels.gate.variants import Variant

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")

# A cuobjdump listing: a loop from 0x0040 back-branch at 0x00a0 with a 128-bit and a 16-bit
# load, a barrier and a 128-bit store inside, a spill store outside, the end self-branch.
LISTING = """
        Function : loop_kernel
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   STL [R1], R2 ;
        /*0040*/               @P0 LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0050*/              @!P1 LDG.E.U16 R8, desc[UR4][R6.64] ;
        /*0060*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0070*/                   STG.E.128 desc[UR4][R10.64], R4 ;
        /*00a0*/               @P2 BRA 0x40 ;
        /*00b0*/                   LDG.E.64 R12, desc[UR4][R2.64] ;
        /*00c0*/                   EXIT ;
        /*00d0*/                   BRA 0xd0;
"""
RESOURCES = """
 Function loop_kernel:
  REG:40 STACK:16 SHARED:1024 LOCAL:0 CONSTANT[0]:592 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
# The same loop as nvdisasm prints it: branch targets are labels.
NVDISASM = """
//--------------------- .text.loop_kernel          --------------------------
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0040*/               @P0 LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0070*/                   STG.E.64 desc[UR4][R10.64], R4 ;
        /*00a0*/               @P2 BRA `(.L_x_0) ;
        /*00b0*/                   LDG.E.U8 R12, desc[UR4][R2.64] ;
"""


def test_sass_reads_resources_loops_and_widths():
    f = sass.parse(RESOURCES, LISTING)["loop_kernel"]
    assert (f.registers, f.stack_bytes, f.shared_bytes) == (40, 16, 1024)
    assert f.loops == 1
    assert f.loads == Counter({128: 1, 16: 1})  # the 64-bit load is after the loop
    assert f.stores == Counter({128: 1})
    assert f.barriers == 1
    assert f.spill_instructions == 1 and f.spilled
    assert f.load_bytes_per_pass == 16 + 2


def test_sass_reads_nvdisasm_labels():
    f = sass.parse("", NVDISASM)["loop_kernel"]
    assert f.loops == 1
    assert f.loads == Counter({128: 1}) and f.stores == Counter({64: 1})


def test_sass_without_loops_counts_the_whole_kernel():
    listing = "Function : flat\n        /*0000*/   LDG.E R2, desc[UR4][R2.64] ;\n"
    f = sass.parse("", listing)["flat"]
    assert f.loops == 0 and f.loads == Counter({32: 1})


def test_width_of_opcodes():
    assert sass.width_of("LDG.E.128.CONSTANT") == 128
    assert sass.width_of("LDGSTS.E.BYPASS.LTC128B.128") == 128
    assert sass.width_of("STG.E.U16") == 16
    assert sass.width_of("LDG.E") == 32


def test_occupancy_follows_the_sm90_limits():
    assert hopper.occupancy(32, 8, 0).warps == 64  # warp-limited
    occ = hopper.occupancy(128, 8, 0)
    assert (occ.blocks, occ.warps, occ.limit) == (2, 16, "registers")
    occ = hopper.occupancy(32, 4, 100 * 1024)
    assert (occ.blocks, occ.limit) == (2, "shared memory")
    assert hopper.occupancy(255, 32, 0).limit == "none fits"
    assert 21_000 < hopper.needed_in_flight() < 23_000


def _variant(kernel="_token_fwd_kernel", config="index_demux fwd bf16 N=10 d=768", **facts):
    function = sass.Function(kernel, registers=facts.pop("registers", 64))
    for name, value in facts.items():
        setattr(function, name, value)
    return Variant("triton", kernel, "spec", function, warps=4, configs=[config])


def test_rules_pass_a_good_memory_bound_kernel():
    good = _variant(loads=Counter({128: 8}), stores=Counter({128: 3}))
    assert good.problems() == []


@pytest.mark.parametrize(
    "facts, expected",
    [
        ({"stack_bytes": 24}, "spills registers"),
        ({"spill_instructions": 3}, "spills registers"),
        ({"loads": Counter({128: 8, 64: 1})}, "narrower than 128 bits"),
        ({"stores": Counter({16: 2}), "loads": Counter({128: 8})}, "narrower than 128 bits"),
        ({"loads": Counter({128: 1})}, "of loads in flight"),
        ({"registers": 255, "loads": Counter({128: 2})}, "of loads in flight"),
    ],
)
def test_rules_name_each_problem(facts, expected):
    problems = _variant(**facts).problems()
    assert any(expected in p for p in problems), problems


def test_width_rule_applies_to_bf16_at_768_only():
    narrow = {"loads": Counter({64: 8})}
    assert _variant(config="index_demux fwd fp32 N=10 d=768", **narrow).problems() == []
    assert _variant(config="index_demux fwd bf16 N=10 d=4096", **narrow).problems() == []
    assert _variant(kernel="_gemm_kernel", **narrow).problems() == []


def test_shared_memory_over_the_limit_fails():
    v = _variant(loads=Counter({128: 8}))
    v.shared_bytes = hopper.SHARED_PER_BLOCK + 1
    assert any("shared memory" in p for p in v.problems())
    v.backend, v.shared_bytes = "cuda", hopper.SHARED_PER_BLOCK_DEFAULT + 1
    assert any("shared memory" in p for p in v.problems())


def test_a_compile_error_fails():
    v = Variant("triton", "-", "x", sass.Function("-"), error="CompilationError: at 1:2")
    assert v.problems() == ["triton -[x]: compile error: CompilationError: at 1:2"]


# --- real kernels, compiled for sm_90 ------------------------------------------------------
# In a process of their own: under TRITON_INTERPRET=1 (the CPU test run) this process's
# Triton interprets kernels instead of compiling them, and the gate refuses nothing.


def _compiled_problems() -> dict[str, list[str]]:
    script = Path(__file__).with_name("gate_broken_kernels.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(script.parent.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@needs_triton
def test_the_gate_fails_on_broken_kernels():
    problems = _compiled_problems()
    assert any("spills registers" in p for p in problems["spills"]), problems
    assert any("compile error" in p for p in problems["does_not_compile"]), problems


@needs_triton
def test_gate_command_on_one_op_writes_its_report(tmp_path):
    out = tmp_path / "kernels.md"
    done = subprocess.run(
        [sys.executable, "-m", "muxkernels", "gate", "--backends", "triton", "--ops",
         "hadamard_mux", "--dtypes", "bf16", "--n", "2", "--d", "768", "--jobs", "1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "Gate: passed" in text and "_hadamard_mux_fwd_kernel" in text
    assert "gate passed" in done.stderr


def test_index_readers_may_load_64_bit_ids():
    ids = {"loads": Counter({128: 8, 64: 1}), "stores": Counter({128: 3})}
    assert _variant(kernel="_rows_fwd_kernel", **ids).problems() == []
    assert _variant(kernel="_token_fwd_kernel", **ids).problems() != []
    stores = {"loads": Counter({128: 8}), "stores": Counter({64: 1})}
    assert _variant(kernel="_rows_fwd_kernel", **stores).problems() != []
