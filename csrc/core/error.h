// Error reporting for the engine. A failed check throws a typed exception that the
// Python bindings turn into ValueError / TypeError / RuntimeError with the same message,
// so a bad argument from Python is a Python exception, never a crash.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ccn {

// A caller passed a value, shape or size that the routine cannot accept (-> ValueError).
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// A caller passed an object of the wrong kind: dtype, device (-> TypeError).
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
template <typename... Args>
std::string format(const Args&... args) {
  std::ostringstream os;
  append(os, args...);
  return os.str();
}
}  // namespace detail

}  // namespace ccn

// CCN_CHECK(cond, "message ", value, ...): throws ccn::ValueError with the pieces concatenated.
#define CCN_CHECK(cond, ...)                                              \
  do {                                                                    \
    if (!(cond)) throw ::ccn::ValueError(::ccn::detail::format(__VA_ARGS__)); \
  } while (0)

#define CCN_CHECK_TYPE(cond, ...)                                         \
  do {                                                                    \
    if (!(cond)) throw ::ccn::TypeError(::ccn::detail::format(__VA_ARGS__)); \
  } while (0)

// An internal failure that is not the caller's fault (allocation, a CUDA launch).
#define CCN_FAIL(...) throw std::runtime_error(::ccn::detail::format(__VA_ARGS__))
