// tg::Error and the checking macros used everywhere in the library.
//
// TG_CHECK(cond, parts...) throws tg::Error("file:line: parts...") when cond is false. The parts are
// streamed with operator<<, so shapes (tg::Shape) and dtypes print as text. Library code reports every
// problem this way; it never calls exit() or abort().
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tg {

/// The one exception type of the library. what() names the place, the op and what was expected/given.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

using Shape = std::vector<int64_t>;

/// "[2, 3, 4]"
std::string shape_str(const Shape& s);

namespace detail {
inline void stream_parts(std::ostringstream&) {}
template <typename T, typename... Rest>
void stream_parts(std::ostringstream& os, const T& first, const Rest&... rest) {
  if constexpr (std::is_same_v<T, Shape>) {
    os << shape_str(first);
  } else {
    os << first;
  }
  stream_parts(os, rest...);
}
template <typename... Parts>
[[noreturn]] void throw_error(const char* file, int line, const Parts&... parts) {
  std::ostringstream os;
  std::string f(file);
  auto slash = f.find_last_of('/');
  os << (slash == std::string::npos ? f : f.substr(slash + 1)) << ":" << line << ": ";
  stream_parts(os, parts...);
  throw Error(os.str());
}
}  // namespace detail

}  // namespace tg

#define TG_CHECK(cond, ...)                                        \
  do {                                                             \
    if (!(cond)) ::tg::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

#define TG_THROW(...) ::tg::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__)
