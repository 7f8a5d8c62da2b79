#include "memory.h"

#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <limits>
#include <sstream>

#include "cuda_context.h"
#include "device_backend.h"
#include "error.h"
#include "size.h"

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

std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device, bool pinned,
                                          const Shape* shape) {
  auto what = [&] {
    std::ostringstream os;
    os << nbytes << " bytes (" << std::fixed << std::setprecision(3)
       << double(nbytes) / double(1ull << 30) << " GiB)";
    if (shape) os << " for a tensor of shape " << shape_str(*shape);
    return os.str();
  };
  TG_CHECK(nbytes <= size_t(std::numeric_limits<ptrdiff_t>::max()), "cannot allocate ", what(),
           " on ", device_name(device), ": more than PTRDIFF_MAX bytes");
  auto s = std::make_shared<Storage>();
  s->nbytes = nbytes;
  s->device = device;
  const size_t request = nbytes == 0 ? 1 : nbytes;
  if (device == Device::CUDA && t_external_allocate) {
    s->data = t_external_allocate(request);
    TG_CHECK(s->data != nullptr, "the external CUDA allocator returned no memory for ", what());
    s->external_free = t_external_free;
  } else if (device == Device::CUDA || (pinned && cuda::is_available())) {
#ifdef TG_WITH_CUDA
    try {
      if (device == Device::CUDA) {
        s->data = detail::cuda_alloc(request);
      } else {
        s->data = detail::pinned_alloc(request);
        s->pinned = true;
      }
    } catch (const Error& e) {
      TG_THROW("could not allocate ", what(),
               device == Device::CUDA ? " on cuda" : " of pinned host memory", ": ", e.what());
    }
#else
    TG_THROW("cannot allocate ", what(),
             " on cuda: this build of tapegrad has no CUDA support "
             "(configure with -DTG_WITH_CUDA=ON)");
#endif
  } else {
    const size_t rounded =
        size_t(checked_add(int64_t(request), int64_t(kHostAlignment - 1), "host allocation size")) /
        kHostAlignment * kHostAlignment;
    s->data = std::aligned_alloc(kHostAlignment, rounded);
    TG_CHECK(s->data != nullptr, "out of host memory: could not allocate ", what());
  }
  return s;
}

}  // namespace tg
