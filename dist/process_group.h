// Data-parallel training across processes started by mpirun: MPI moves CPU tensors and bootstraps
// NCCL, which moves CUDA tensors (rank 0 creates the NCCL unique id and broadcasts it over MPI).
//
//   mpirun -np 2 tg-train --data data.h5 ...
//
// Every wait is bounded by a timeout: a rank that died or hangs makes the others throw a tg::Error
// ("... did not complete within 300 s ...") instead of hanging; the program's main then calls
// abort(), which ends every rank (MPI_Abort; ncclCommAbort first on CUDA).
// Only built with TG_WITH_DIST (MPI found); dist::built() says.
#pragma once

#include <memory>
#include <vector>

#include "../core/tensor.h"

namespace tg::dist {

/// True when this build has MPI support.
bool built();
/// True when this process was started by an MPI launcher (mpirun sets OMPI_COMM_WORLD_SIZE or
/// PMI_SIZE) with more than one process, or when TG_DIST=1 forces data-parallel mode (one rank
/// included: the GPU check runs the NCCL path that way on a single GPU).
bool launched_by_mpi();

struct Options {
  double timeout_s = 300;  ///< the longest any collective may wait for the other ranks
};

/// An in-flight all-reduce; wait() finishes it (averaged values in the tensors).
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class ProcessGroup {
 public:
  /// Initialises MPI (once per process). For Device::CUDA, selects GPU local_rank % device_count
  /// and creates the NCCL communicator.
  ProcessGroup(Device device, Options options = {});
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const;
  int size() const;
  Device device() const;

  /// Starts averaging the tensors (all on this group's device, same shapes on every rank) across
  /// ranks, in place. CPU: MPI_Iallreduce; CUDA: NCCL on a communication stream that waits for the
  /// work queued so far, so the compute stream goes on meanwhile.
  std::unique_ptr<Work> allreduce_mean(const std::vector<Tensor>& tensors);
  /// Sum of a host value over ranks (blocking, bounded by the timeout).
  double allreduce_sum(double value);
  /// Maximum of a host value over ranks (blocking, bounded by the timeout).
  double allreduce_max(double value);
  /// Copies root's values into t on every rank (blocking).
  void broadcast(Tensor& t, int root = 0);
  /// Ends every rank of the job at once (after a fatal error on this one). Does not return.
  [[noreturn]] void abort(int code);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// Averages parameter gradients across ranks in buckets, each all-reduce starting as soon as the
/// backward has produced the bucket's last gradient (through autograd::set_grad_ready_hook), so that
/// communication overlaps the rest of the backward.
///   reducer.prepare(weight);  loss.backward();  reducer.finish();  opt.step();
class GradReducer {
 public:
  /// Buckets follow the reverse of params' order (the order a backward produces gradients), each up
  /// to bucket_bytes.
  GradReducer(ProcessGroup& group, std::vector<Tensor> params, size_t bucket_bytes = 4 << 20);
  ~GradReducer();
  /// Arms the hook for one backward. weight scales this rank's gradients before averaging: with
  /// shards of unequal size n_r (of n in all) pass n_r * size / n, so the average equals the
  /// gradient of the whole batch's mean loss.
  void prepare(double weight = 1.0);
  /// Starts the buckets that are not started yet (gradients that did not arrive count as zero) and
  /// waits for every all-reduce.
  void finish();

 private:
  void on_grad_ready(const Tensor& leaf);
  void start_bucket(size_t b);
  ProcessGroup& group_;
  std::vector<Tensor> params_;
  std::vector<std::vector<size_t>> buckets_;  // indices into params_
  std::vector<size_t> bucket_of_;             // param -> bucket
  std::vector<int> pending_;                  // per bucket: gradients still to arrive
  std::vector<bool> ready_;                   // per param
  std::vector<std::unique_ptr<Work>> work_;
  double weight_ = 1.0;
};

}  // namespace tg::dist
