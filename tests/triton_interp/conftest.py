"""Triton kernels under Triton's interpreter, on CPU tensors.

TRITON_INTERPRET=1 must be set before triton is first imported, so these tests run in
their own pytest process (`make test` does: TRITON_INTERPRET=1 pytest tests/triton_interp).
"""

import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    raise pytest.UsageError("tests/triton_interp needs TRITON_INTERPRET=1 (see Makefile)")
