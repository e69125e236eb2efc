"""Tanh in CUDA C++, compiled at import with torch.utils.cpp_extension.load_inline: a grid-stride loop
with float4 loads and stores where the tensor allows it, scalar ones for the tail.

Needs the task's allow list to accept native code:
`--allow static.escape:torch.utils.cpp_extension.load_inline`."""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_CUDA = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>

__global__ void tanh_vec4(const float4* __restrict__ x, float4* __restrict__ y, long long n4) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = x[i];
        v.x = tanhf(v.x); v.y = tanhf(v.y); v.z = tanhf(v.z); v.w = tanhf(v.w);
        y[i] = v;
    }
}

__global__ void tanh_tail(const float* __restrict__ x, float* __restrict__ y, long long start, long long n) {
    long long i = start + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = tanhf(x[i]);
}

torch::Tensor tanh_forward(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat32, "tanh_forward takes a float32 CUDA tensor");
    auto xc = x.contiguous();
    auto y = torch::empty_like(xc);
    long long n = xc.numel();
    long long n4 = n / 4;
    auto stream = at::cuda::getCurrentCUDAStream();
    const int threads = 256;
    if (n4 > 0) {
        long long blocks = std::min<long long>((n4 + threads - 1) / threads, 132LL * 32);
        tanh_vec4<<<(unsigned)blocks, threads, 0, stream>>>(
            reinterpret_cast<const float4*>(xc.data_ptr<float>()), reinterpret_cast<float4*>(y.data_ptr<float>()), n4);
    }
    if (n - n4 * 4 > 0) {
        tanh_tail<<<1, threads, 0, stream>>>(xc.data_ptr<float>(), y.data_ptr<float>(), n4 * 4, n);
    }
    return y;
}
"""

_ext = load_inline(name="kernelbench_tanh_v1", cpp_sources="torch::Tensor tanh_forward(torch::Tensor x);",
                   cuda_sources=_CUDA, functions=["tanh_forward"], extra_cuda_cflags=["-O3"], verbose=False)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ext.tanh_forward(x)
