"""The `vsteer` torch.library namespace (one DEF library per namespace)."""

import torch

LIB = torch.library.Library("vsteer", "DEF")
