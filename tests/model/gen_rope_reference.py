# Prints the reference rotary inverse frequencies hard-coded in rope_test.cpp, as float32 bit
# patterns, computed by HF transformers itself (the model's RotaryEmbedding module on CPU).
# Made with transformers 5.24.0 / torch 2.15.0 (CPU, AVX512): python3 tests/model/gen_rope_reference.py
import copy

import numpy as np
from transformers import AutoConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

# Same fields as the configs in rope_test.cpp.
CASES = {
    "kLlama32_1B": ("llama", LlamaRotaryEmbedding, dict(
        hidden_size=2048, num_attention_heads=32, num_key_value_heads=8, head_dim=64, rope_theta=500000.0,
        max_position_embeddings=131072,
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"})),
    "kLlama31_8B": ("llama", LlamaRotaryEmbedding, dict(
        hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
        max_position_embeddings=131072,
        rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"})),
    "kLlama2Linear4": ("llama", LlamaRotaryEmbedding, dict(
        hidden_size=4096, num_attention_heads=32, rope_theta=10000.0, max_position_embeddings=16384,
        rope_scaling={"type": "linear", "factor": 4.0})),
    "kQwen2_7B": ("qwen2", Qwen2RotaryEmbedding, dict(
        hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, rope_theta=1000000.0,
        max_position_embeddings=32768)),
    "kMistral7B": ("mistral", MistralRotaryEmbedding, dict(
        hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, rope_theta=10000.0,
        max_position_embeddings=32768)),
}

for name, (model_type, cls, fields) in CASES.items():
    inv = cls(AutoConfig.for_model(model_type, **copy.deepcopy(fields))).inv_freq.to("cpu").numpy().astype(np.float32)
    bits = inv.view(np.uint32)
    print(f"// {model_type}")
    print(f"constexpr uint32_t {name}[{len(bits)}] = {{")
    for i in range(0, len(bits), 6):
        print("    " + ", ".join(f"0x{b:08x}u" for b in bits[i:i + 6]) + ",")
    print("};")
