// The output folder of a run. Opening it creates it, proves that files can be created in it (before
// any training), takes an exclusive lock for the run (flock on <dir>/tg-train.lock, released by the
// kernel however the process ends, kill -9 included) and removes stale temporaries that dead
// processes left behind. Plus the atomic text-file write that the run's small outputs use.
#pragma once

#include <string>
#include <vector>

namespace tg::train {

/// The files of a run that a new run would replace (the lock file and data are not among them).
const std::vector<std::string>& run_output_names();

class RunDir {
 public:
  /// Creates path (with parents), checks that a file can be created and removed in it, locks it and
  /// sweeps stale temporaries. Throws tg::Error naming the folder and the system's reason when it
  /// cannot be created or written, or when another process holds the lock (with that process's id).
  explicit RunDir(std::string path);
  ~RunDir();  ///< releases the lock (the lock file stays, unlocked)
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::string& path() const { return path_; }
  /// path/name
  std::string file(const std::string& name) const;
  /// The run outputs (run_output_names()) present in the folder, in that order (an empty
  /// metrics.jsonl, of a run that failed before its first record, does not count).
  std::vector<std::string> existing_outputs() const;
  /// Throws tg::Error naming the first run output that exists but is not a regular file (or a link
  /// to one): a directory, a device, a dangling link.
  void check_outputs_are_files() const;
  /// Removes the run outputs (for --overwrite); throws naming the first that cannot be removed.
  void remove_outputs() const;
  /// The stale temporaries removed when the folder was opened.
  const std::vector<std::string>& removed_temporaries() const { return removed_; }

 private:
  std::string path_;
  int lock_fd_ = -1;
  std::vector<std::string> removed_;
};

/// Removes the files in dir named <name>.tmp-<pid>-<n> (the temporaries of atomic saves) whose
/// process pid no longer exists, or is this process (a previous holder of the same id); returns
/// their names. Files of live processes are left alone.
std::vector<std::string> remove_stale_temporaries_in(const std::string& dir);

/// Writes text to path atomically: into <path>.tmp-<pid>-<n>, flushed to disk, renamed over path.
/// Every failure (open, write, sync, rename) throws tg::Error naming path and the system's reason;
/// no temporary remains and the previous file at path is left as it was.
void write_file_atomically(const std::string& path, const std::string& text);

/// "<path>.tmp-<pid>-<n>" with n counting up in this process.
std::string temporary_name(const std::string& path);

namespace detail {
/// Writes all of text to the file descriptor (retrying short writes); false, errno set, on failure.
bool write_all(int fd, const std::string& text);
}  // namespace detail

}  // namespace tg::train
