"""Diffusion priors behind one interface (see priors/README in the docs)."""
