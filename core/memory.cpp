#include "core/memory.h"

#include <cstdlib>
#include <cstdio>

#include "core/cuda_context.h"
#include "core/device_backend.h"
#include "core/error.h"

namespace tg {

namespace {
constexpr size_t kHostAlignment = 64;
thread_local void* (*t_external_allocate)(size_t) = nullptr;
thread_local void (*t_external_free)(void*) = nullptr;
}  // namespace

cuda::ExternalAllocatorGuard::ExternalAllocatorGuard(void* (*allocate)(size_t), void (*free)(void*))
    : prev_allocate_(t_external_allocate), prev_free_(t_external_free) {
  t_external_allocate = allocate;
  t_external_free = free;
}

cuda::ExternalAllocatorGuard::~ExternalAllocatorGuard() {
  t_external_allocate = prev_allocate_;
  t_external_free = prev_free_;
}

Storage::~Storage() {
  if (!data || !owned) return;
  try {
    if (external_free) {
      external_free(data);
    } else if (device == Device::CUDA) {
#ifdef TG_WITH_CUDA
      detail::cuda_free(data, nbytes);
#endif
    } else if (pinned) {
#ifdef TG_WITH_CUDA
      detail::pinned_free(data);
#endif
    } else {
      std::free(data);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tapegrad: error while freeing memory: %s\n", e.what());
  }
}

std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device, bool pinned) {
  auto s = std::make_shared<Storage>();
  s->nbytes = nbytes;
  s->device = device;
  size_t request = nbytes == 0 ? 1 : nbytes;
  if (device == Device::CUDA && t_external_allocate) {
    s->data = t_external_allocate(request);
    TG_CHECK(s->data != nullptr, "the external CUDA allocator returned no memory for ", nbytes,
             " bytes");
    s->external_free = t_external_free;
  } else if (device == Device::CUDA) {
    TG_IF_CUDA(s->data = detail::cuda_alloc(request));
  } else if (pinned && cuda::is_available()) {
#ifdef TG_WITH_CUDA
    s->data = detail::pinned_alloc(request);
    s->pinned = true;
#endif
  } else {
    size_t rounded = (request + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    s->data = std::aligned_alloc(kHostAlignment, rounded);
    TG_CHECK(s->data != nullptr, "out of host memory: could not allocate ", nbytes, " bytes");
  }
  return s;
}

}  // namespace tg
