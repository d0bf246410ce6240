"""Sparse autoencoders on the residual stream: import (SAELens layout) and the CLI."""
