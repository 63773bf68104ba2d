"""Placeholder: the ortho_mux Triton kernels are being written."""
