// CUDA graphs in a build without CUDA: nothing is ever captured (core/cuda_graph.h).
#ifndef TG_WITH_CUDA
#include "cuda_graph.h"

#include "error.h"

namespace tg::cuda {

bool is_capturing() { return false; }
size_t graph_pool_bytes() { return 0; }

Graph::~Graph() = default;

void Graph::capture(const std::function<void()>&) {
  TG_THROW(
      "cuda::Graph::capture: this build of tapegrad has no CUDA support "
      "(configure with -DTG_WITH_CUDA=ON)");
}

void Graph::replay() {
  TG_THROW(
      "cuda::Graph::replay: this build of tapegrad has no CUDA support "
      "(configure with -DTG_WITH_CUDA=ON)");
}

size_t Graph::num_nodes() const { return 0; }
void Graph::reset() {}

}  // namespace tg::cuda
#endif
