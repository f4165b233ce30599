# Shared test setup.
#
# The Triton kernels in kernels/ are tested on CUDA tensors when a GPU is
# present, and otherwise on CPU tensors through the Triton interpreter. The
# interpreter has to be chosen before triton is first imported, which is why
# it is set here, before pytest imports any test module.
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
