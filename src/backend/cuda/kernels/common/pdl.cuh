// Programmatic dependent launch (PDL, sm_90+) inside kernels. A kernel launched with
// programmatic stream serialization (ops/pdl_launch.h) may start while the kernel before it on
// the stream is still running: it must call grid_dependency_wait() before it touches anything
// that kernel (or any earlier one) writes, and it lets the kernel after it start launching with
// launch_dependents(). Both are no-ops below sm_90 and for kernels launched without the
// attribute. Every kernel of the chain waits before it can complete, so "the previous kernel has
// completed" implies that every earlier one has too.
#pragma once

namespace anvil::cuda::kern {

// Wait until the previous kernel on the stream has completed and its writes are visible.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Let the next kernel on the stream begin launching (it still waits for this one to complete
// before reading what this one writes).
__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The prologue of a kernel that joins the chain and has no work worth doing before the wait:
// let the next kernel (a weight-streaming GEMV) launch and prefetch its weights while this one
// waits for its inputs and runs.
__device__ __forceinline__ void pdl_chain_enter() {
  launch_dependents();
  grid_dependency_wait();
}

}  // namespace anvil::cuda::kern
