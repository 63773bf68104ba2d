"""Placeholder: the hadamard_mux Triton kernels are being written."""
