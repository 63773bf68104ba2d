"""Placeholder: the mlp_demux Triton kernels are being written."""
