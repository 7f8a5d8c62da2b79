#include "process_group.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <unordered_map>

#include "../core/autograd.h"
#include "../core/cuda_context.h"

#ifdef TG_WITH_DIST
#define OMPI_SKIP_MPICXX 1  // the C API only: no MPI C++ bindings to link
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif
#ifdef TG_WITH_NCCL
#include <nccl.h>

#include "../core/cuda_utils.h"
#endif

namespace tg::dist {

bool built() {
#ifdef TG_WITH_DIST
  return true;
#else
  return false;
#endif
}

bool launched_by_mpi() {
  const char* force = std::getenv("TG_DIST");
  if (force && std::string(force) == "1") return true;
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* v = std::getenv(var);
    if (v && std::atoi(v) > 1) return true;
  }
  return false;
}

#ifndef TG_WITH_DIST

struct ProcessGroup::Impl {};
ProcessGroup::ProcessGroup(Device, Options) {
  TG_THROW("data-parallel training needs a build with MPI (TG_WITH_DIST): install libopenmpi-dev "
           "and configure again");
}
ProcessGroup::~ProcessGroup() = default;
int ProcessGroup::rank() const { return 0; }
int ProcessGroup::size() const { return 1; }
Device ProcessGroup::device() const { return Device::CPU; }
std::unique_ptr<Work> ProcessGroup::allreduce_mean(const std::vector<Tensor>&) { return nullptr; }
double ProcessGroup::allreduce_sum(double v) { return v; }
double ProcessGroup::allreduce_max(double v) { return v; }
void ProcessGroup::broadcast(Tensor&, int) {}
void ProcessGroup::abort(int code) { std::_Exit(code); }

#else

namespace {

using Clock = std::chrono::steady_clock;

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  TG_THROW("MPI error in ", what, ": ", std::string(msg, size_t(len)));
}

// Waits for an MPI request, polling, at most timeout_s.
void wait_request(MPI_Request& req, double timeout_s, int rank, const char* what) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    int done = 0;
    check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    TG_CHECK(Clock::now() < deadline, "rank ", rank, ": ", what, " did not complete within ",
             timeout_s, " s: another rank died, hangs or stopped early (timeout: --dist-timeout)");
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

MPI_Datatype mpi_type(DType t) { return t == DType::Float32 ? MPI_FLOAT : MPI_DOUBLE; }

}  // namespace

struct ProcessGroup::Impl {
  int rank = 0, size = 1;
  Device device = Device::CPU;
  Options opt;
#ifdef TG_WITH_NCCL
  ncclComm_t comm = nullptr;
  cudaStream_t comm_stream = nullptr;

  // Polls until the communicator's pending operation finished, within the timeout; aborts it
  // otherwise so that no rank is left inside NCCL.
  void nccl_wait(const char* what, const std::function<bool()>& done) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(opt.timeout_s);
    for (;;) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        ncclCommAbort(comm);
        comm = nullptr;
        TG_THROW("rank ", rank, ": NCCL error in ", what, ": ", ncclGetErrorString(async));
      }
      if (async == ncclSuccess && done()) return;
      if (Clock::now() > deadline) {
        ncclCommAbort(comm);
        comm = nullptr;
        TG_THROW("rank ", rank, ": ", what, " did not complete within ", opt.timeout_s,
                 " s: another rank died, hangs or stopped early (timeout: --dist-timeout)");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
#endif
};

namespace {

class MpiWork : public Work {
 public:
  MpiWork(std::vector<Tensor> ts, const ProcessGroup::Impl& g) : ts_(std::move(ts)), g_(g) {
    for (Tensor& t : ts_) {
      reqs_.emplace_back();
      check_mpi(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), int(t.numel()), mpi_type(t.dtype()),
                               MPI_SUM, MPI_COMM_WORLD, &reqs_.back()),
                "MPI_Iallreduce");
    }
  }
  void wait() override {
    for (MPI_Request& r : reqs_) wait_request(r, g_.opt.timeout_s, g_.rank, "a gradient all-reduce");
    reqs_.clear();
    // sum -> mean: t += (1/size - 1) * t
    for (Tensor& t : ts_) t.add_(t, 1.0 / g_.size - 1.0);
  }

 private:
  std::vector<Tensor> ts_;
  std::vector<MPI_Request> reqs_;
  const ProcessGroup::Impl& g_;
};

#ifdef TG_WITH_NCCL
class NcclWork : public Work {
 public:
  NcclWork(const std::vector<Tensor>& ts, ProcessGroup::Impl& g) : g_(g) {
    cudaEvent_t ready;
    TG_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    TG_CUDA_CHECK(cudaEventRecord(ready, cuda::stream()));
    TG_CUDA_CHECK(cudaStreamWaitEvent(g.comm_stream, ready, 0));
    TG_CUDA_CHECK(cudaEventDestroy(ready));
    ncclGroupStart();
    for (const Tensor& t : ts)
      ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()),
                    t.dtype() == DType::Float32 ? ncclFloat : ncclDouble, ncclAvg, g.comm,
                    g.comm_stream);
    ncclResult_t rc = ncclGroupEnd();
    TG_CHECK(rc == ncclSuccess || rc == ncclInProgress, "rank ", g.rank,
             ": NCCL all-reduce failed to start: ", ncclGetErrorString(rc));
    TG_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    TG_CUDA_CHECK(cudaEventRecord(done_, g.comm_stream));
  }
  ~NcclWork() override {
    if (done_) cudaEventDestroy(done_);
  }
  void wait() override {
    g_.nccl_wait("a gradient all-reduce", [&] { return cudaEventQuery(done_) == cudaSuccess; });
    TG_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(), done_, 0));
  }

 private:
  ProcessGroup::Impl& g_;
  cudaEvent_t done_ = nullptr;
};
#endif

}  // namespace

ProcessGroup::ProcessGroup(Device device, Options opt) : impl_(std::make_unique<Impl>()) {
  Impl& g = *impl_;
  g.device = device;
  g.opt = opt;
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g.size);
  if (device == Device::CUDA) {
#ifdef TG_WITH_NCCL
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    const int local_rank = local ? std::atoi(local) : g.rank;
    TG_CHECK(cuda::device_count() > 0, "rank ", g.rank, ": no usable CUDA device");
    cuda::set_device(local_rank % cuda::device_count());
    ncclUniqueId id;
    if (g.rank == 0) ncclGetUniqueId(&id);
    MPI_Request req;
    check_mpi(MPI_Ibcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD, &req), "MPI_Ibcast");
    wait_request(req, opt.timeout_s, g.rank, "broadcasting the NCCL id");
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // so that a missing rank shows as a timeout, not a hang
    ncclResult_t rc = ncclCommInitRankConfig(&g.comm, g.size, id, g.rank, &config);
    TG_CHECK(rc == ncclSuccess || rc == ncclInProgress, "rank ", g.rank,
             ": ncclCommInitRankConfig failed: ", ncclGetErrorString(rc));
    g.nccl_wait("creating the NCCL communicator", [] { return true; });
    TG_CUDA_CHECK(cudaStreamCreateWithFlags(&g.comm_stream, cudaStreamNonBlocking));
#else
    TG_THROW("data-parallel training on CUDA needs NCCL, which this build did not find");
#endif
  }
}

ProcessGroup::~ProcessGroup() {
#ifdef TG_WITH_NCCL
  if (impl_->comm) ncclCommDestroy(impl_->comm);
  if (impl_->comm_stream) cudaStreamDestroy(impl_->comm_stream);
#endif
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int ProcessGroup::rank() const { return impl_->rank; }
int ProcessGroup::size() const { return impl_->size; }
Device ProcessGroup::device() const { return impl_->device; }

std::unique_ptr<Work> ProcessGroup::allreduce_mean(const std::vector<Tensor>& tensors) {
  for (const Tensor& t : tensors)
    TG_CHECK(t.device() == impl_->device, "allreduce_mean: expected tensors on ",
             device_name(impl_->device), ", got ", t.describe());
#ifdef TG_WITH_NCCL
  if (impl_->device == Device::CUDA) return std::make_unique<NcclWork>(tensors, *impl_);
#endif
  return std::make_unique<MpiWork>(tensors, *impl_);
}

double ProcessGroup::allreduce_sum(double value) {
  MPI_Request req;
  double out = 0;
  check_mpi(MPI_Iallreduce(&value, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req),
            "MPI_Iallreduce");
  wait_request(req, impl_->opt.timeout_s, impl_->rank, "a scalar all-reduce");
  return out;
}

double ProcessGroup::allreduce_max(double value) {
  MPI_Request req;
  double out = 0;
  check_mpi(MPI_Iallreduce(&value, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD, &req),
            "MPI_Iallreduce");
  wait_request(req, impl_->opt.timeout_s, impl_->rank, "a scalar all-reduce");
  return out;
}

void ProcessGroup::broadcast(Tensor& t, int root) {
  Tensor host = t.cpu().clone();
  MPI_Request req;
  check_mpi(MPI_Ibcast(host.raw_data(), int(host.numel()), mpi_type(host.dtype()), root,
                       MPI_COMM_WORLD, &req),
            "MPI_Ibcast");
  wait_request(req, impl_->opt.timeout_s, impl_->rank, "a broadcast");
  t.copy_(host);
}

void ProcessGroup::abort(int code) {
#ifdef TG_WITH_NCCL
  if (impl_->comm) ncclCommAbort(impl_->comm);
  impl_->comm = nullptr;
#endif
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

#endif  // TG_WITH_DIST

// ---- GradReducer ---------------------------------------------------------------------------------

GradReducer::GradReducer(ProcessGroup& group, std::vector<Tensor> params, size_t bucket_bytes)
    : group_(group), params_(std::move(params)) {
  bucket_of_.assign(params_.size(), 0);
  size_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    if (buckets_.empty() || bytes >= bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    bytes += params_[k].nbytes();
  }
}

GradReducer::~GradReducer() { autograd::set_grad_ready_hook(nullptr); }

void GradReducer::prepare(double weight) {
  weight_ = weight;
  ready_.assign(params_.size(), false);
  pending_.clear();
  for (const auto& b : buckets_) pending_.push_back(int(b.size()));
  work_.clear();
  work_.resize(buckets_.size());
  autograd::set_grad_ready_hook([this](const Tensor& leaf) { on_grad_ready(leaf); });
}

void GradReducer::on_grad_ready(const Tensor& leaf) {
  for (size_t k = 0; k < params_.size(); ++k) {
    if (!params_[k].same(leaf)) continue;
    TG_CHECK(!ready_[k], "GradReducer: parameter ", k, " received a second gradient in one "
             "backward after its bucket was sent; use each parameter once per forward");
    ready_[k] = true;
    const size_t b = bucket_of_[k];
    if (--pending_[b] == 0) start_bucket(b);
    return;
  }
}

void GradReducer::start_bucket(size_t b) {
  std::vector<Tensor> grads;
  for (size_t k : buckets_[b]) {
    Tensor& p = params_[k];
    if (!p.grad().defined()) p.set_grad(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    Tensor g = p.grad();
    if (weight_ != 1.0) g.add_(g, weight_ - 1.0);  // g *= weight
    grads.push_back(g);
  }
  work_[b] = group_.allreduce_mean(grads);
}

void GradReducer::finish() {
  autograd::set_grad_ready_hook(nullptr);
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (!work_[b]) start_bucket(b);
  for (auto& w : work_)
    if (w) w->wait();
  work_.clear();
}

}  // namespace tg::dist
