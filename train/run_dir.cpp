#include "run_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>

#include "../core/error.h"

namespace fs = std::filesystem;

namespace tg::train {

namespace {

constexpr const char* kLockName = "tg-train.lock";

std::string sys_error() { return std::strerror(errno); }

bool process_exists(long pid) {
  if (pid <= 0) return false;
  return ::kill(pid_t(pid), 0) == 0 || errno == EPERM;
}

}  // namespace

bool detail::write_all(int fd, const std::string& text) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    p += n;
    left -= size_t(n);
  }
  return true;
}

const std::vector<std::string>& run_output_names() {
  static const std::vector<std::string> names{"metrics.jsonl",    "last.h5",         "best.h5",
                                              "last.safetensors", "best.safetensors", "loss.svg"};
  return names;
}

std::string temporary_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string temp = temporary_name(path);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  TG_CHECK(fd >= 0, "could not create ", temp, " (to write ", path, "): ", sys_error());
  int err = detail::write_all(fd, text) && ::fsync(fd) == 0 ? 0 : errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(temp.c_str());
    TG_THROW("could not write ", path, ": ", std::strerror(err));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string why = sys_error();
    ::unlink(temp.c_str());
    TG_THROW("could not write ", path, " (renaming ", temp, " over it): ", why);
  }
}

std::vector<std::string> remove_stale_temporaries_in(const std::string& dir) {
  static const std::regex pattern(R"(.+\.tmp-([0-9]{1,10})-[0-9]+)");
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, pattern)) continue;
    const long pid = std::stol(m[1].str());
    if (pid != long(::getpid()) && process_exists(pid)) continue;
    std::error_code rm;
    if (e.is_regular_file(rm) && fs::remove(e.path(), rm)) removed.push_back(name);
  }
  return removed;
}

RunDir::RunDir(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  fs::create_directories(path_, ec);
  TG_CHECK(!ec, "could not create the output folder ", path_, ": ", ec.message());
  TG_CHECK(fs::is_directory(path_, ec), "--output ", path_, " is not a folder");
  {  // a file can be created (and removed) in it: checked now, not after the first epoch
    const std::string probe = temporary_name(file(".write-test"));
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    TG_CHECK(fd >= 0, "the output folder ", path_, " is not writable: ", sys_error());
    const bool ok = detail::write_all(fd, "ok\n");
    const std::string reason = sys_error();
    ::close(fd);
    ::unlink(probe.c_str());
    TG_CHECK(ok, "the output folder ", path_, " is not writable: ", reason);
  }
  const std::string lock = file(kLockName);
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  TG_CHECK(lock_fd_ >= 0, "could not open the lock file ", lock, ": ", sys_error());
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {0};
    const ssize_t n = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, size_t(n)) : std::string();
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK)
      TG_THROW("the output folder ", path_, " is in use by another run (process ",
               holder.empty() ? "?" : holder, ", which holds ", lock,
               "): wait for it to end or choose another --output");
    TG_THROW("could not lock ", lock, ": ", std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0) {
    const std::string why = sys_error();
    ::close(lock_fd_);
    lock_fd_ = -1;
    TG_THROW("could not write the lock file ", lock, ": ", why);
  }
  removed_ = remove_stale_temporaries_in(path_);
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string RunDir::file(const std::string& name) const {
  return (fs::path(path_) / name).string();
}

std::vector<std::string> RunDir::existing_outputs() const {
  std::vector<std::string> out;
  for (const std::string& n : run_output_names()) {
    std::error_code ec;
    const fs::path p = file(n);
    if (fs::symlink_status(p, ec).type() == fs::file_type::not_found) continue;
    // an empty metrics log (a run that failed before its first record) holds nothing to keep
    if (n == "metrics.jsonl" && fs::is_regular_file(p, ec) && fs::file_size(p, ec) == 0) continue;
    out.push_back(n);
  }
  return out;
}

void RunDir::check_outputs_are_files() const {
  for (const std::string& n : existing_outputs()) {
    std::error_code ec;
    const fs::file_type t = fs::status(file(n), ec).type();
    const char* what = t == fs::file_type::directory   ? "a folder"
                       : t == fs::file_type::not_found ? "a dangling link"
                       : t == fs::file_type::regular   ? nullptr
                                                       : "not a regular file";
    TG_CHECK(what == nullptr, "the output ", file(n), " is ", what,
             ": the run cannot write it; remove it or choose another --output");
  }
}

void RunDir::remove_outputs() const {
  for (const std::string& n : existing_outputs()) {
    std::error_code ec;
    fs::remove(file(n), ec);
    TG_CHECK(!ec, "--overwrite: could not remove ", file(n), ": ", ec.message());
  }
}

}  // namespace tg::train
