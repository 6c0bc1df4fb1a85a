# Writes python_written.safetensors, read by safetensors_test.cpp to check that anvil reads what
# the reference library writes. Run once: python3 tests/model/data/make_python_fixture.py
import os

import torch
from safetensors.torch import save_file

tensors = {
    "layers.0.weight": (torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4).to(torch.bfloat16),
    "layers.0.bias": torch.tensor([-1.5, 0.25, 3.0], dtype=torch.float32),
    "norm.weight": torch.tensor([1, 2, 3, 4, 5], dtype=torch.float16),
}
save_file(tensors, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_written.safetensors"),
          metadata={"format": "pt"})
