// The CUDA side of SGD: one kernel launch updates every parameter (multi-tensor apply), and the
// descriptor table it reads.
//
// Layout: each tensor is cut into chunks of kSgdChunk elements; chunks are numbered globally in
// parameter order and descriptor t owns chunks [chunk_begin_t, chunk_begin_{t+1}). Thread mapping:
// one 256-thread block per chunk (grid-stride over chunks when there are more chunks than blocks);
// the block finds its tensor by binary search on chunk_begin (the same answer for every thread, so
// the loads are broadcasts), then its threads stride through the chunk's elements, coalesced.
// Each element is updated by sgd_update_element (optim/sgd.h), the same code as the CPU loop; a
// descriptor's dtype and first-update flag are read per tensor, so mixed dtypes still take one launch.
//
// Table upload: the descriptors are compared with the last upload; only when they differ (new
// gradient pointers, buffers just created, first update done) are they written into a pinned staging
// slot and copied with cudaMemcpyAsync on the stream, ahead of the kernel in stream order. Two slots
// alternate; a slot is rewritten only once the event recorded after its previous copy has completed.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "../core/cuda_utils.h"
#include "sgd.h"

namespace tg::optim::detail {

namespace {

constexpr int kSgdThreads = 256;

template <typename T>
__device__ void sgd_chunk(const SgdTensorDesc& d, int64_t begin, int64_t end, const SgdHyper& h) {
  T* __restrict__ p = static_cast<T*>(d.param);
  const T* __restrict__ g = static_cast<const T*>(d.grad);
  T* __restrict__ buf = static_cast<T*>(d.buf);
  const T lr = T(h.lr), momentum = T(h.momentum), omd = T(h.one_minus_dampening),
          wd = T(h.weight_decay);
  const bool fresh = d.fresh != 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    T pi = p[i];
    sgd_update_element<T>(pi, g[i], buf ? buf + i : nullptr, fresh, lr, momentum, omd, wd,
                          h.nesterov);
    p[i] = pi;
  }
}

__global__ void sgd_multi_tensor_kernel(const SgdTensorDesc* __restrict__ table, int64_t num_tensors,
                                        int64_t total_chunks, SgdHyper h) {
  for (int64_t c = blockIdx.x; c < total_chunks; c += gridDim.x) {
    // The last descriptor whose chunk_begin <= c.
    int64_t lo = 0, hi = num_tensors - 1;
    while (lo < hi) {
      int64_t mid = (lo + hi + 1) / 2;
      if (table[mid].chunk_begin <= c) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const SgdTensorDesc d = table[lo];
    const int64_t begin = (c - d.chunk_begin) * kSgdChunk;
    const int64_t end = min(begin + kSgdChunk, d.numel);
    if (d.is_double) {
      sgd_chunk<double>(d, begin, end, h);
    } else {
      sgd_chunk<float>(d, begin, end, h);
    }
  }
}

}  // namespace

void sgd_multi_tensor_step_cuda(const SgdTensorDesc* device_table, int64_t num_tensors,
                                int64_t total_chunks, const SgdHyper& h, cudaStream_t stream) {
  if (num_tensors <= 0 || total_chunks <= 0) return;
  const int64_t cap = int64_t(tg::cuda::device_properties().multiProcessorCount) * 32;
  const unsigned blocks = unsigned(std::min(total_chunks, cap));
  sgd_multi_tensor_kernel<<<blocks, kSgdThreads, 0, stream>>>(device_table, num_tensors,
                                                               total_chunks, h);
  TG_CUDA_CHECK_LAUNCH();
}

void sgd_step_cuda(SgdDeviceTable& table, const std::vector<SgdTensorDesc>& descs,
                   int64_t total_chunks, const SgdHyper& h) {
  if (descs.empty()) return;
  cudaStream_t stream = tg::cuda::stream();
  const SgdTensorDesc* device_table = table.update(descs, stream);
  sgd_multi_tensor_step_cuda(device_table, int64_t(descs.size()), total_chunks, h, stream);
}

SgdDeviceTable::SgdDeviceTable(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {
  const size_t nbytes = capacity_ * sizeof(SgdTensorDesc);
  device_ = allocate_storage(nbytes, Device::CUDA);
  staging_[0] = allocate_storage(nbytes, Device::CPU, /*pinned=*/true);
  staging_[1] = allocate_storage(nbytes, Device::CPU, /*pinned=*/true);
  for (int s = 0; s < 2; ++s) {
    cudaError_t err = cudaEventCreateWithFlags(&copied_[s], cudaEventDisableTiming);
    if (err != cudaSuccess) {
      if (s == 1) cudaEventDestroy(copied_[0]);
      TG_THROW("SGD: cudaEventCreateWithFlags failed: ", cudaGetErrorString(err));
    }
  }
}

SgdDeviceTable::~SgdDeviceTable() {
  for (cudaEvent_t e : copied_) {
    if (e == nullptr) continue;
    cudaError_t err = cudaEventDestroy(e);
    // At process exit the driver may already be shut down; that is not worth a message.
    if (err != cudaSuccess && err != cudaErrorCudartUnloading)
      std::fprintf(stderr, "tapegrad: SGD: cudaEventDestroy failed: %s\n", cudaGetErrorString(err));
  }
}

const SgdTensorDesc* SgdDeviceTable::update(const std::vector<SgdTensorDesc>& descs,
                                            cudaStream_t stream) {
  TG_CHECK(descs.size() <= capacity_, "SGD: descriptor table holds ", capacity_,
           " tensors, got ", descs.size());
  const size_t nbytes = descs.size() * sizeof(SgdTensorDesc);
  auto* device = static_cast<SgdTensorDesc*>(device_->data);
  if (valid_ && current_.size() == descs.size() &&
      std::memcmp(current_.data(), descs.data(), nbytes) == 0)
    return device;

  const int s = next_slot_;
  if (pending_[s]) {
    // Normally long finished (it was queued a step ago); wait only if it is not.
    cudaError_t q = cudaEventQuery(copied_[s]);
    if (q == cudaErrorNotReady) {
      TG_CUDA_CHECK(cudaEventSynchronize(copied_[s]));
    } else {
      TG_CUDA_CHECK(q);
    }
    pending_[s] = false;
  }
  std::memcpy(staging_[s]->data, descs.data(), nbytes);
  // Once this copy is queued, the device table is being replaced: if anything below fails, the
  // cached description must not be trusted.
  valid_ = false;
  TG_CUDA_CHECK(cudaMemcpyAsync(device, staging_[s]->data, nbytes, cudaMemcpyHostToDevice, stream));
  TG_CUDA_CHECK(cudaEventRecord(copied_[s], stream));
  pending_[s] = true;
  next_slot_ = 1 - s;
  current_ = descs;
  valid_ = true;
  ++uploads_;
  return device;
}

}  // namespace tg::optim::detail
