"""The sm_90 compile gate: every kernel compiled for Hopper without a GPU, and checked.

``muxkernels gate`` (``python -m muxkernels.gate``) compiles every Triton specialisation
the launchers produce at the benchmark shapes and reads every CUDA instantiation of the
built extension, then reports registers, spills, shared memory, resident warps and the
width of the global loads and stores in each hot loop (``docs/kernels.md``), and fails on
a compile error, a spill, a block over its shared memory, or a memory-bound kernel that
moves narrower than 128-bit vectors or keeps too few loads in flight.
"""
