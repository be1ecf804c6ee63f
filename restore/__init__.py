"""restore: image restoration and inverse problems with diffusion priors, from the command line."""

__version__ = "0.1.0"
