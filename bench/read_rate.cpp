// The ceiling of streaming a file from the page cache to a GPU on this machine, without tapegrad:
// T threads pread() the file in 1 MiB pieces (taken in turn from a shared counter) into a
// page-locked buffer of one batch, optionally check each piece for NaN/Inf (as the reader does),
// optionally while the previous batch is copied to the GPU from a second page-locked buffer
// (cudaMemcpyAsync on a stream of its own: the overlap a perfect streaming design would have).
// Prints GB/s of file data; scripts/bench-e2e.sh turns that into samples/s.
//
//   g++ -O3 -std=c++17 bench/read_rate.cpp -I/usr/local/cuda/include -L/usr/local/cuda/lib64
//       -lcudart -pthread -o /tmp/read_rate
//   /tmp/read_rate FILE BATCH_BYTES THREADS [check] [copy]
#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#define CK(x)                                                                  \
  do {                                                                         \
    cudaError_t e_ = (x);                                                      \
    if (e_ != cudaSuccess) {                                                   \
      std::fprintf(stderr, "read_rate: %s: %s\n", #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: read_rate FILE BATCH_BYTES THREADS [check] [copy]\n");
    return 2;
  }
  const std::string path = argv[1];
  const size_t batch = std::strtoull(argv[2], nullptr, 10);
  const int threads = std::atoi(argv[3]);
  bool check = false, copy = false;
  for (int i = 4; i < argc; ++i) {
    check |= std::strcmp(argv[i], "check") == 0;
    copy |= std::strcmp(argv[i], "copy") == 0;
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || batch == 0 || threads < 1) {
    std::fprintf(stderr, "read_rate: cannot open '%s', or a bad batch size / thread count\n",
                 path.c_str());
    return 2;
  }
  const size_t file = size_t(st.st_size), nbatches = file / batch;
  if (nbatches < 2) {
    std::fprintf(stderr, "read_rate: '%s' holds fewer than two batches of %zu bytes\n",
                 path.c_str(), batch);
    return 2;
  }
  char* host[2];
  void* dev = nullptr;
  for (char*& h : host) CK(cudaHostAlloc(reinterpret_cast<void**>(&h), batch, cudaHostAllocDefault));
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  if (copy) CK(cudaMalloc(&dev, batch));
  for (char* h : host) std::memset(h, 0, batch);  // fault the pages in before timing
  constexpr size_t kPiece = size_t(1) << 20;
  std::atomic<int> bad{0};
  auto read_batch = [&](size_t b, char* dst) {
    const size_t pieces = (batch + kPiece - 1) / kPiece;
    std::atomic<size_t> next{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&] {
        for (size_t p; (p = next.fetch_add(1)) < pieces;) {
          const size_t off = p * kPiece, len = std::min(kPiece, batch - off);
          size_t done = 0;
          while (done < len) {
            const ssize_t n = ::pread(fd, dst + off + done, len - done, off_t(b * batch + off + done));
            if (n <= 0) {
              std::fprintf(stderr, "read_rate: pread failed\n");
              std::exit(1);
            }
            done += size_t(n);
          }
          if (check) {  // as the reader's first_nonfinite (io/dataset.cpp): branch-free compares
            const float* f = reinterpret_cast<const float*>(dst + off);
            const float big = std::numeric_limits<float>::max();
            int b = 0;
            for (size_t i = 0; i < len / 4; ++i) b |= !(std::fabs(f[i]) <= big);
            if (b) bad.fetch_add(1);
          }
        }
      });
    for (auto& t : ts) t.join();
  };
  read_batch(0, host[0]);  // warm-up (threads, page tables)
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t b = 0; b < nbatches; ++b) {
    char* dst = host[b % 2];
    read_batch(b, dst);
    if (copy) {
      CK(cudaStreamSynchronize(stream));  // the copy of batch b-1 (other buffer) is done
      CK(cudaMemcpyAsync(dev, dst, batch, cudaMemcpyHostToDevice, stream));
    }
  }
  CK(cudaStreamSynchronize(stream));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.1f\n", double(nbatches * batch) / s / 1e9);
  std::fprintf(stderr, "read_rate: %zu batches of %zu bytes, %d threads%s%s: %.3f s%s\n", nbatches,
               batch, threads, check ? ", checked" : "", copy ? ", copied to the GPU" : "", s,
               bad.load() ? " (non-finite values seen)" : "");
  return 0;
}
