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

}  // namespace tg::cuda

#ifdef TG_WITH_CUDA
#define TG_IF_CUDA(...) __VA_ARGS__
#else
#define TG_IF_CUDA(...) TG_THROW("this build of tapegrad has no CUDA support (configure with -DTG_WITH_CUDA=ON)")
#endif
