// tg::cuda::Graph (core/cuda_graph.h): stream capture on tapegrad's stream into a graph whose
// allocations come from a private pool of the caching allocator (core/cuda_context_cuda.cpp).
#include <cstdio>

#include "cuda_context.h"
#include "cuda_graph.h"
#include "cuda_graph_pool.h"
#include "cuda_utils.h"

namespace tg::cuda {

namespace {

// Ends the capture on stream after a failure and drops whatever it recorded.
void abandon_capture(cudaStream_t stream) noexcept {
  cudaGraph_t partial = nullptr;
  if (cudaStreamEndCapture(stream, &partial) == cudaSuccess && partial) cudaGraphDestroy(partial);
  cudaGetLastError();  // the capture's own error, already reported (or about to be)
}

}  // namespace

Graph::~Graph() { reset(); }

void Graph::reset() {
  if (exec_) {
    const cudaError_t err = cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
    // At process exit the driver may already be shut down; that is not worth a message.
    if (err != cudaSuccess && err != cudaErrorCudartUnloading)
      std::fprintf(stderr, "tapegrad: cudaGraphExecDestroy failed: %s\n", cudaGetErrorString(err));
  }
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
  exec_ = graph_ = nullptr;
  // A replay still running is ordered before any later use of the released blocks: they are
  // handed out again only to work queued on the stream after it.
  if (pool_ != 0) detail::release_graph_pool(device_, pool_);
  pool_ = 0;
  stream_ = nullptr;
  device_ = -1;
}

void Graph::capture(const std::function<void()>& fn) {
  TG_CHECK(exec_ == nullptr,
           "cuda::Graph::capture: this graph already holds a capture; reset() it to capture again");
  TG_CHECK(is_available(), "cuda::Graph::capture: no usable CUDA device was found");
  TG_CHECK(!is_capturing(),
           "cuda::Graph::capture: this thread is capturing a graph already "
           "(captures do not nest)");
  cudaStream_t s = stream();
  TG_CHECK(s != nullptr,
           "cuda::Graph::capture: the current stream is the legacy default stream (a StreamGuard "
           "with a null stream), which cannot be captured; guard a stream of your own");
  const int device = current_device();
  const uint64_t pool = detail::create_graph_pool(device);
  cudaError_t err = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  if (err != cudaSuccess) {
    cudaGetLastError();
    detail::release_graph_pool(device, pool);
    TG_THROW("cuda::Graph::capture: cudaStreamBeginCapture failed: ", cudaGetErrorName(err), " (",
             cudaGetErrorString(err), ")");
  }
  detail::set_capture_pool(device, pool);
  try {
    fn();
  } catch (const Error& e) {
    detail::set_capture_pool(device, 0);
    abandon_capture(s);
    detail::release_graph_pool(device, pool);
    throw Error(std::string("while capturing a CUDA graph: ") + e.what());
  } catch (...) {
    detail::set_capture_pool(device, 0);
    abandon_capture(s);
    detail::release_graph_pool(device, pool);
    throw;
  }
  detail::set_capture_pool(device, 0);
  cudaGraph_t graph = nullptr;
  err = cudaStreamEndCapture(s, &graph);
  if (err != cudaSuccess) {
    cudaGetLastError();
    if (graph) cudaGraphDestroy(graph);
    detail::release_graph_pool(device, pool);
    TG_THROW("cuda::Graph::capture: CUDA invalidated the capture (", cudaGetErrorName(err), ": ",
             cudaGetErrorString(err),
             "): the captured function ran an operation that cannot be recorded in a graph, such "
             "as a synchronisation, a stream or event query, a synchronous copy or work on the "
             "legacy default stream; run it outside the captured function");
  }
  cudaGraphExec_t exec = nullptr;
  err = cudaGraphInstantiate(&exec, graph, 0);
  if (err != cudaSuccess) {
    cudaGetLastError();
    cudaGraphDestroy(graph);
    detail::release_graph_pool(device, pool);
    TG_THROW("cuda::Graph::capture: cudaGraphInstantiate failed: ", cudaGetErrorName(err), " (",
             cudaGetErrorString(err), ")");
  }
  graph_ = graph;
  exec_ = exec;
  stream_ = s;
  device_ = device;
  pool_ = pool;
}

void Graph::replay() {
  TG_CHECK(exec_ != nullptr, "cuda::Graph::replay: nothing was captured");
  TG_CHECK(current_device() == device_, "cuda::Graph::replay: the graph was captured on device ",
           device_, ", the current device is ", current_device());
  TG_CHECK(stream() == static_cast<cudaStream_t>(stream_),
           "cuda::Graph::replay: the current stream is not the one the graph was captured on (a "
           "StreamGuard began or ended); its memory is ordered on that stream only");
  TG_CHECK(!is_capturing(), "cuda::Graph::replay: this thread is capturing a graph");
  TG_CUDA_CHECK(
      cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream_)));
}

size_t Graph::num_nodes() const {
  if (!graph_) return 0;
  size_t n = 0;
  TG_CUDA_CHECK(cudaGraphGetNodes(static_cast<cudaGraph_t>(graph_), nullptr, &n));
  return n;
}

}  // namespace tg::cuda
