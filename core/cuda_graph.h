// CUDA graphs: record a sequence of tapegrad's device work once, replay it with one launch.
//
//   tg::cuda::Graph g;
//   g.capture([&] { step(); });  // nothing runs yet: step()'s launches are recorded
//   g.replay();                   // runs them; again and again
//
// Capture is on tapegrad's stream of the current device (cuda::stream()), in
// cudaStreamCaptureModeThreadLocal: other threads go on as usual. A replay runs the recorded
// kernels and device copies with the pointers and arguments they had at capture; host code in the
// captured function ran once, at capture, and never again.
//
// Memory: while a thread captures, its allocations come from a private pool of the caching
// allocator that the graph owns, and every block it frees goes there too (it may have been used by
// a recorded kernel). Inside the capture a freed block is reused by later allocations of the same
// capture (replays run in the same order); outside it, pool blocks are never handed to anyone else
// while the graph lives, even when the tensor that held one is freed, so replays cannot overwrite
// another tensor. A pool is filled from the allocator's cache first (work queued before the capture
// precedes every replay in stream order), then by cudaMalloc (in relaxed capture mode: cudaMalloc
// is not a stream operation). When the graph is destroyed or reset, its cached blocks go back to
// the allocator's cache, and blocks still held by tensors follow when those are freed. A block
// belongs to one pool: when two live graphs use the same tensor's memory and one of them made it,
// that one keeps it; destroy the other first (or free such tensors outside captures).
//
// Whatever must wait for the device or move data to or from the host during capture (item(),
// to_vector(), cpu(), copies between host and device, cuda::synchronize(), empty_cache()) throws
// tg::Error naming the capture instead of recording something that would be wrong at replay. Any
// other operation that CUDA refuses to capture makes capture() throw with CUDA's error.
//
// In a build without CUDA there is never a capture: is_capturing() is false, and capture() and
// replay() throw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace tg::cuda {

/// True while this thread captures a graph (a tg::cuda::Graph, or any capture on cuda::stream()).
bool is_capturing();

/// Device memory of the current device held by the private pools of CUDA graphs (blocks in use by
/// tensors plus blocks cached in the pools); 0 once every graph and the tensors it made are gone.
size_t graph_pool_bytes();

class Graph {
 public:
  Graph() = default;
  /// Destroys the graph and releases its pool (logs errors, never throws).
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  /// Runs fn once under capture and instantiates what it launched. Throws tg::Error when this graph
  /// already holds a capture, when the thread is capturing already (captures do not nest), on the
  /// legacy default stream, when fn throws (the capture is abandoned, its pool released, and the
  /// error is rethrown with "while capturing a CUDA graph" in front) or when CUDA invalidates the
  /// capture.
  void capture(const std::function<void()>& fn);
  /// Launches the captured work on cuda::stream() (asynchronous). Throws when nothing was captured,
  /// or when the current device or stream is not the one of the capture.
  void replay();
  bool captured() const { return exec_ != nullptr; }
  /// Number of nodes (kernels, copies, memsets) in the captured graph; 0 before capture.
  size_t num_nodes() const;
  /// Drops the captured graph and releases its pool; capture() may run again.
  void reset();

 private:
  void* graph_ = nullptr;   // cudaGraph_t
  void* exec_ = nullptr;    // cudaGraphExec_t
  void* stream_ = nullptr;  // cudaStream_t of the capture
  int device_ = -1;
  uint64_t pool_ = 0;  // the allocator's private pool (0: none)
};

}  // namespace tg::cuda
