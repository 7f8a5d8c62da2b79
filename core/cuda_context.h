// Device discovery, usable in every build (answers "no GPU" in a build without CUDA).
#pragma once

namespace tg::cuda {

/// True when this build has CUDA and a device can be used. A machine without a driver makes
/// cudaGetDeviceCount return an error: that counts as "no GPU", never as a failure.
bool is_available();
int device_count();
/// Selects the device that this thread's tensors use (default 0).
void set_device(int index);
int current_device();
/// Waits for all work queued on the current device's stream.
void synchronize();

/// While the guard lives, this thread's work for the current device is queued on stream (a
/// cudaStream_t; null is the legacy default stream) instead of tapegrad's own stream, and cuDNN's
/// calls follow. For a host framework that owns the stream (tapegrad_torch: PyTorch's current
/// stream). Nests.
class StreamGuard {
 public:
  explicit StreamGuard(void* stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  void* prev_stream_;
  int prev_device_;
};

}  // namespace tg::cuda

#ifdef TG_WITH_CUDA
#define TG_IF_CUDA(...) __VA_ARGS__
#else
#define TG_IF_CUDA(...) TG_THROW("this build of tapegrad has no CUDA support (configure with -DTG_WITH_CUDA=ON)")
#endif
