"""GELU (the exact, erf form: 0.5 x (1 + erf(x / sqrt 2))) in CUDA C++, compiled at import with
torch.utils.cpp_extension.load_inline: a grid-stride loop with float4 loads and stores, scalar tail.

Needs the task's allow list to accept native code:
`--allow static.escape:torch.utils.cpp_extension.load_inline`."""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_CUDA = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>

__device__ __forceinline__ float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

__global__ void gelu_vec4(const float4* __restrict__ x, float4* __restrict__ y, long long n4) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = x[i];
        v.x = gelu(v.x); v.y = gelu(v.y); v.z = gelu(v.z); v.w = gelu(v.w);
        y[i] = v;
    }
}

__global__ void gelu_tail(const float* __restrict__ x, float* __restrict__ y, long long start, long long n) {
    long long i = start + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = gelu(x[i]);
}

torch::Tensor gelu_forward(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat32, "gelu_forward takes a float32 CUDA tensor");
    auto xc = x.contiguous();
    auto y = torch::empty_like(xc);
    long long n = xc.numel();
    long long n4 = n / 4;
    auto stream = at::cuda::getCurrentCUDAStream();
    const int threads = 256;
    if (n4 > 0) {
        long long blocks = std::min<long long>((n4 + threads - 1) / threads, 132LL * 32);
        gelu_vec4<<<(unsigned)blocks, threads, 0, stream>>>(
            reinterpret_cast<const float4*>(xc.data_ptr<float>()), reinterpret_cast<float4*>(y.data_ptr<float>()), n4);
    }
    if (n - n4 * 4 > 0) {
        gelu_tail<<<1, threads, 0, stream>>>(xc.data_ptr<float>(), y.data_ptr<float>(), n4 * 4, n);
    }
    return y;
}
"""

_ext = load_inline(name="kernelbench_gelu_v1", cpp_sources="torch::Tensor gelu_forward(torch::Tensor x);",
                   cuda_sources=_CUDA, functions=["gelu_forward"], extra_cuda_cflags=["-O3"], verbose=False)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ext.gelu_forward(x)
