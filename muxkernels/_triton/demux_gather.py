"""Placeholder: the demux_gather Triton kernels are being written."""
