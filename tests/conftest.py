# Shared test setup.
#
# The Triton kernels in kernels/ are tested on CUDA tensors when a GPU is
# present, and otherwise on CPU tensors through the Triton interpreter. The
# interpreter has to be chosen before triton is first imported, which is why
# it is set here, before pytest imports any test module.
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: a second thread only adds synchronisation, and on a busy
    machine a thread waiting for a descheduled peer makes each small op 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
