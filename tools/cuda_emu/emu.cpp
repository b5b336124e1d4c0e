// The CUDA emulator's scheduler, checker and counters (see build.sh).
//
// Scheduling: the blocks of a launch run one at a time in a random order; the threads of a
// block are ucontext fibers on the launching host thread. Each round runs every ready thread,
// in a new random order, until it reaches __syncthreads, a warp intrinsic or its end; warp
// intrinsics complete when every lane of their mask has arrived (lockstep semantics), a
// barrier when every thread of the block has. The order comes from a seed printed once per
// process (CCN_EMU_SEED repeats a run).
//
// Checking: the kernel translation units are compiled with -fsanitize=thread, whose hooks
// (__tsan_read4, ...) are defined here: every load and store of a kernel comes through
// on_access. __shared__ arrays live in one buffer, poisoned (0xff bytes: NaN) at each block's
// start, with a per-byte stamp of the block that last wrote it: a read of a byte no thread of
// this block wrote is an error. Device memory comes from one arena with a shadow word per
// 4 bytes naming the launch and block that last wrote it: a write or read by another block of
// the same launch is a race (atomics run here, unseen, so they are exempt). Threads that reach
// different numbers of barriers, warp intrinsics whose lanes never all arrive, and launches
// over the limits are errors. An error fails the launch (cudaGetLastError), with the message.
//
// Counting (on CCN_EMU_SAMPLE blocks per launch, default 1): each thread's accesses are logged
// with the instruction's address; at every barrier the accesses of a warp are grouped by
// (instruction, occurrence), as the warp would issue them. Per global request: 32-byte sectors
// touched against the fewest that could hold the bytes asked for (coalescing); per shared
// request: wavefronts against the fewest possible (bank conflicts). A shared request is served
// 128 bytes per wavefront: 4-byte accesses for the whole warp at once, 8-byte ones (float2) per
// half warp and 16-byte ones (float4) per quarter warp, in phases of consecutive lanes; a
// phase takes as many wavefronts as the most distinct 4-byte words it reads in one of the 32
// banks, and at least its distinct words / 32. (A float4 broadcast thus counts 4 wavefronts,
// 4 ideal: a phase is never merged with another.) float2/float4 accesses are single accesses
// (cuda_runtime.h), and a misaligned one fails the launch, as on the GPU. With CCN_EMU_REPORT=file each launch appends a JSON line with its
// counters; CCN_EMU_SAMPLED_ONLY=1 runs only the sampled blocks (for profiling large layers).
#include <dlfcn.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_runtime.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace emu {
cudaError_t last_error = cudaSuccess;
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kStaticSharedLimit = 48 * 1024;  // per block, as on the GPU
constexpr size_t kSharedBuffer = 64 * 1024;
constexpr unsigned char kPoison = 0xff;  // NaN as float and double, -1 as int

// ---- settings and reports ------------------------------------------------------------------

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

struct Settings {
  uint64_t seed;
  unsigned sample;
  bool sampledOnly;
  FILE* report = nullptr;
  Settings() {
    seed = env_u64("CCN_EMU_SEED", std::random_device{}());
    sample = unsigned(env_u64("CCN_EMU_SAMPLE", 1));
    sampledOnly = env_u64("CCN_EMU_SAMPLED_ONLY", 0) != 0;
    if (const char* path = std::getenv("CCN_EMU_REPORT"); path && *path) report = std::fopen(path, "a");
    std::fprintf(stderr, "cuda_emu: seed %" PRIu64 " (CCN_EMU_SEED=%" PRIu64 " repeats this run)\n", seed, seed);
  }
};

Settings& settings() {
  static Settings s;
  return s;
}

// "function file:line" of a code address in a kernel (addr2line), for error messages.
std::string where(const void* pc) {
  Dl_info info;
  if (!pc || !dladdr(pc, &info) || !info.dli_fname) return "?";
  char hex[32];
  std::snprintf(hex, sizeof hex, "0x%zx", size_t(uintptr_t(pc) - uintptr_t(info.dli_fbase) - 1));
  std::string cmd = "addr2line -C -f -s -e '" + std::string(info.dli_fname) + "' " + hex + " 2>/dev/null";
  std::string out;
  if (FILE* f = popen(cmd.c_str(), "r")) {
    char line[512];
    while (std::fgets(line, sizeof line, f)) {
      std::string s(line);
      while (!s.empty() && s.back() == '\n') s.pop_back();
      out += out.empty() ? s : " " + s;
    }
    pclose(f);
  }
  return out.empty() ? std::string(hex) : out;
}

std::string pc_offset(const void* pc) {
  Dl_info info;
  if (!pc || !dladdr(pc, &info)) return "?";
  char hex[32];
  std::snprintf(hex, sizeof hex, "0x%zx", size_t(uintptr_t(pc) - uintptr_t(info.dli_fbase) - 1));
  return hex;
}

// ---- device memory: one arena with a shadow word per 4 bytes ---------------------------------

struct Arena {
  unsigned char* base = nullptr;
  size_t size = 0;
  uint64_t* shadow = nullptr;  // (launch << 32) | block + 1 of the last plain write, per word
  std::map<size_t, size_t> free_;  // offset -> length
  std::map<size_t, size_t> used;
  std::mutex mutex;

  Arena() {
    for (size_t gib = 64; gib >= 1 && !base; gib /= 2) {
      size = gib << 30;
      void* b = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (b == MAP_FAILED) continue;
      void* s = mmap(nullptr, size * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (s == MAP_FAILED) { munmap(b, size); continue; }
      base = static_cast<unsigned char*>(b);
      shadow = static_cast<uint64_t*>(s);
    }
    if (!base) { std::fprintf(stderr, "cuda_emu: cannot reserve device memory\n"); std::abort(); }
    free_[0] = size;
  }
  void* alloc(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    bytes = std::max<size_t>(256, (bytes + 255) / 256 * 256);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < bytes) continue;
      size_t off = it->first, len = it->second;
      free_.erase(it);
      if (len > bytes) free_[off + bytes] = len - bytes;
      used[off] = bytes;
      return base + off;
    }
    return nullptr;
  }
  void release(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mutex);
    size_t off = static_cast<unsigned char*>(p) - base;
    auto u = used.find(off);
    if (u == used.end()) return;
    size_t len = u->second;
    used.erase(u);
    // Give the pages back (they read as zeros next time; the shadow as "never written").
    madvise(base + off, len, MADV_DONTNEED);
    madvise(shadow + off / 4, len / 4 * sizeof(uint64_t), MADV_DONTNEED);
    auto next = free_.lower_bound(off);
    if (next != free_.end() && next->first == off + len) { len += next->second; free_.erase(next); }
    auto prev = free_.lower_bound(off);
    if (prev != free_.begin()) {
      --prev;
      if (prev->first + prev->second == off) { prev->second += len; return; }
    }
    free_[off] = len;
  }
};

Arena& arena() {
  static Arena a;
  return a;
}

// ---- the running launch --------------------------------------------------------------------

enum class State { Ready, Barrier, Warp, Done };

struct Access {
  const void* pc;
  uintptr_t addr;
  uint32_t size;
  bool write, shared;
};

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;  // uninitialized: pages are committed only when touched
  uint3 index;
  State state = State::Done;
  int barriers = 0;
  WarpOp op;
  unsigned mask;
  uint64_t value, result;
  int arg, width;
  std::vector<Access> log;
};

struct SharedArray {
  const void* tag;
  size_t offset, bytes;
  const char* name;
};

struct Counters {
  uint64_t gRequests = 0, gSectors = 0, gIdealSectors = 0, gBytes = 0, gLoads = 0, gStores = 0;
  uint64_t sRequests = 0, sWavefronts = 0, sIdealWavefronts = 0, sConflicts = 0, sLoads = 0, sStores = 0;
  uint64_t threads = 0, blocks = 0;
  int worstWays = 1;
  const void* worstSharedPc = nullptr;
  double worstSectorRatio = 1.0;
  const void* worstGlobalPc = nullptr;
};

std::mutex launch_mutex;
ucontext_t scheduler;
std::vector<Fiber> fibers;
size_t current = 0;
const std::function<void()>* kernel_body = nullptr;
std::mt19937_64 rng;
bool rng_seeded = false;

// Hooks are called from every instrumented access, also from host threads not launching:
// only the launching thread, while its kernel runs, is watched.
thread_local bool in_kernel __attribute__((tls_model("initial-exec"))) = false;

alignas(128) unsigned char shared_mem[kSharedBuffer];
uint32_t shared_stamp[kSharedBuffer];  // block_stamp of the block that last wrote each byte
std::vector<SharedArray> shared_arrays;
size_t shared_used = 0;
uint32_t block_stamp = 0;     // increases with every block of every launch
uint32_t launch_id = 0;       // increases with every launch
uint32_t block_linear = 0;    // the running block's index in the grid
bool sampling = false;        // the running block's accesses are logged
std::string kernel;           // the running kernel's name
std::string first_error;      // the launch's first error
bool fatal = false;           // the block cannot go on
int reported_unwritten = 0, reported_race = 0, reported_overflow = 0, reported_misaligned = 0;  // each: its first only
Counters counters;
std::string error_message = "emulated launch error";

void fiber_main() {
  (*kernel_body)();
  fibers[current].state = State::Done;
  swapcontext(&fibers[current].context, &scheduler);
}

bool valid_launch(dim3 grid, dim3 block) {
  size_t threads = size_t(block.x) * block.y * block.z;
  return threads >= 1 && threads <= 1024 && block.z <= 64 && grid.x >= 1 && grid.y >= 1 && grid.z >= 1 &&
         grid.y <= 65535 && grid.z <= 65535 && grid.x <= 2147483647u;
}

std::string coords(uint3 i) {
  return "(" + std::to_string(i.x) + ", " + std::to_string(i.y) + ", " + std::to_string(i.z) + ")";
}

uint3 block_coords(uint32_t linear) {
  return uint3{linear % gridDim.x, linear / gridDim.x % gridDim.y, linear / (gridDim.x * gridDim.y)};
}

void report(const std::string& message) {
  std::string full = kernel + ": " + message;
  std::fprintf(stderr, "cuda_emu: %s\n", full.c_str());
  if (first_error.empty()) first_error = full;
}

void fail(const std::string& message) {
  report(message);
  fatal = true;
}

std::string thread_name(size_t i) { return "thread " + coords(fibers[i].index) + " of block " + coords(blockIdx); }

// ---- the checker's view of each access ------------------------------------------------------

void on_shared(uintptr_t a, size_t size, bool write, const void* pc) {
  size_t off = a - uintptr_t(shared_mem);
  if (off + size > shared_used) {
    if (reported_overflow++ == 0)
      report(thread_name(current) + " accesses shared memory past its __shared__ arrays at " + where(pc));
    return;
  }
  if (write) {
    for (size_t i = 0; i < size; ++i) shared_stamp[off + i] = block_stamp;
    return;
  }
  for (size_t i = 0; i < size; ++i) {
    if (shared_stamp[off + i] == block_stamp) continue;
    if (reported_unwritten++ == 0) {
      const SharedArray* array = nullptr;
      for (const SharedArray& s : shared_arrays)
        if (off >= s.offset && off < s.offset + s.bytes) array = &s;
      std::string what = array ? std::string(array->name) + " (byte " + std::to_string(off - array->offset) + ")"
                               : "byte " + std::to_string(off);
      report(thread_name(current) + " reads __shared__ " + what + ", which no thread of this block wrote, at " +
             where(pc));
    }
    return;
  }
}

void on_global(uintptr_t a, size_t size, bool write, const void* pc) {
  Arena& m = arena();
  size_t w0 = (a - uintptr_t(m.base)) / 4, w1 = (a + size - 1 - uintptr_t(m.base)) / 4;
  const uint64_t mine = (uint64_t(launch_id) << 32) | (uint64_t(block_linear) + 1);
  for (size_t w = w0; w <= w1; ++w) {
    uint64_t s = m.shadow[w];
    if (s >> 32 == launch_id && s != mine) {
      if (reported_race++ == 0) {
        uint3 other = block_coords(uint32_t(s & 0xffffffffu) - 1);
        report(std::string("race between blocks: ") + thread_name(current) + (write ? " writes" : " reads") +
               " device memory that block " + coords(other) + " wrote in this launch (without atomics), at " +
               where(pc));
      }
      break;
    }
    if (write) m.shadow[w] = mine;
  }
}

inline void on_access(const void* p, size_t size, bool write, const void* pc) {
  if (!in_kernel) return;
  uintptr_t a = uintptr_t(p);
  bool shared = a - uintptr_t(shared_mem) < kSharedBuffer;
  if ((size == 8 || size == 16) && a % size && (shared || a - uintptr_t(arena().base) < arena().size) &&
      reported_misaligned++ == 0)
    report(thread_name(current) + (write ? " writes " : " reads ") + std::to_string(size) + " bytes at an address not " +
           std::to_string(size) + "-byte aligned (misaligned vector access) at " + where(pc));
  if (shared) on_shared(a, size, write, pc);
  else if (a - uintptr_t(arena().base) < arena().size) on_global(a, size, write, pc);
  else return;
  if (sampling) fibers[current].log.push_back(Access{pc, a, uint32_t(size), write, shared});
}

// ---- counters: a warp's accesses grouped as it would issue them ------------------------------

// g: (lane, access) of one request, in lane order.
void count_group(std::vector<std::pair<uint32_t, const Access*>>& g) {
  if (g.front().second->shared) {
    uint32_t size = 4;
    for (auto [lane, a] : g) size = std::max(size, std::min<uint32_t>(a->size, 16));
    const uint32_t phaseLanes = 32 / ((size + 3) / 4);
    int wavefronts = 0, ideal = 0;
    for (size_t i = 0; i < g.size();) {
      // One phase: its distinct 4-byte words; wavefronts: the most distinct words in one bank.
      const uint32_t phase = g[i].first / phaseLanes;
      std::vector<uintptr_t> words;
      for (; i < g.size() && g[i].first / phaseLanes == phase; ++i) {
        const Access* a = g[i].second;
        for (uintptr_t w = a->addr / 4; w <= (a->addr + a->size - 1) / 4; ++w) words.push_back(w);
      }
      std::sort(words.begin(), words.end());
      words.erase(std::unique(words.begin(), words.end()), words.end());
      int perBank[32] = {}, most = 0;
      for (uintptr_t w : words) most = std::max(most, ++perBank[w % 32]);
      wavefronts += most;
      ideal += int((words.size() + 31) / 32);
    }
    counters.sRequests++;
    counters.sWavefronts += wavefronts;
    counters.sIdealWavefronts += ideal;
    if (wavefronts > ideal) {
      counters.sConflicts++;
      int ways = (wavefronts + ideal - 1) / ideal;
      if (ways > counters.worstWays) { counters.worstWays = ways; counters.worstSharedPc = g.front().second->pc; }
    }
    return;
  }
  // Bytes asked for (merged intervals) and the 32-byte sectors holding them.
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;
  for (auto [lane, a] : g) spans.push_back({a->addr, a->addr + a->size});
  std::sort(spans.begin(), spans.end());
  uint64_t bytes = 0, sectors = 0;
  uintptr_t end = 0, lastSector = UINTPTR_MAX;
  for (auto [lo, hi] : spans) {
    lo = std::max(lo, end);
    if (lo >= hi) continue;
    bytes += hi - lo;
    end = hi;
    uintptr_t s0 = lo / 32, s1 = (hi - 1) / 32;
    sectors += s1 - s0 + 1 - (s0 == lastSector ? 1 : 0);
    lastSector = s1;
  }
  uint64_t ideal = (bytes + 31) / 32;
  counters.gRequests++;
  counters.gSectors += sectors;
  counters.gIdealSectors += ideal;
  double ratio = double(ideal) / double(sectors);
  if (ratio < counters.worstSectorRatio) { counters.worstSectorRatio = ratio; counters.worstGlobalPc = g.front().second->pc; }
}

void count_phase(size_t threads) {
  for (size_t w0 = 0; w0 < threads; w0 += 32) {
    // Key: (instruction, space, how many times this thread issued it before).
    std::map<std::tuple<const void*, bool, uint32_t>, std::vector<std::pair<uint32_t, const Access*>>> groups;
    for (size_t t = w0; t < std::min(threads, w0 + 32); ++t) {
      std::unordered_map<const void*, uint32_t> seen;
      for (const Access& a : fibers[t].log) {
        groups[{a.pc, a.shared, seen[a.pc]++}].push_back({uint32_t(t - w0), &a});
        (a.shared ? (a.write ? counters.sStores : counters.sLoads) : (a.write ? counters.gStores : counters.gLoads))++;
        if (!a.shared) counters.gBytes += a.size;
      }
    }
    for (auto& [key, g] : groups) count_group(g);
  }
  for (size_t t = 0; t < threads; ++t) fibers[t].log.clear();
}

// ---- warp intrinsics -------------------------------------------------------------------------

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync: return "__syncwarp";
    case WarpOp::Shfl: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
  }
  return "?";
}

// Completes the warp operations whose lanes have all arrived; false when none could.
bool resolve_warps(size_t threads) {
  bool progressed = false;
  for (size_t w0 = 0; w0 < threads && !fatal; w0 += 32) {
    size_t lanes = std::min<size_t>(32, threads - w0);
    for (size_t l = 0; l < lanes && !fatal; ++l) {
      Fiber& first = fibers[w0 + l];
      if (first.state != State::Warp) continue;
      const unsigned mask = first.mask;
      const std::string where_ = thread_name(w0 + l) + " (" + op_name(first.op) + ", mask 0x";
      char hex[16];
      std::snprintf(hex, sizeof hex, "%08x)", mask);
      if (!(mask >> l & 1u)) { fail(where_ + hex + ": the calling lane is not in the mask"); break; }
      for (size_t k = 0; k < 32 && !fatal; ++k) {
        if (!(mask >> k & 1u)) continue;
        if (k >= lanes) { fail(where_ + hex + ": lane " + std::to_string(k) + " does not exist"); break; }
        const Fiber& f = fibers[w0 + k];
        if (f.state == State::Warp && f.op == first.op && f.mask == mask) continue;
        fail(where_ + hex + ": lane " + std::to_string(k) +
             (f.state == State::Done      ? " has finished"
              : f.state == State::Barrier ? " waits at __syncthreads"
                                          : std::string(" calls ") + op_name(f.op) + " with another mask"));
      }
      if (fatal) break;
      uint64_t ballot = 0;
      for (size_t k = 0; k < lanes; ++k)
        if (mask >> k & 1u) ballot |= uint64_t(fibers[w0 + k].value != 0) << k;
      for (size_t k = 0; k < lanes && !fatal; ++k) {
        if (!(mask >> k & 1u)) continue;
        Fiber& f = fibers[w0 + k];
        const int width = f.width, base = int(k) & ~(width - 1);
        int src = int(k);
        switch (f.op) {
          case WarpOp::Sync: break;
          case WarpOp::Shfl: src = base + (f.arg & (width - 1)); break;
          case WarpOp::ShflUp: src = int(k) - f.arg < base ? int(k) : int(k) - f.arg; break;
          case WarpOp::ShflDown: src = int(k) + f.arg >= base + width ? int(k) : int(k) + f.arg; break;
          case WarpOp::ShflXor: src = (int(k) ^ f.arg) >= base + width ? int(k) : int(k) ^ f.arg; break;
          case WarpOp::Ballot: f.result = ballot; break;
          case WarpOp::Any: f.result = ballot != 0; break;
          case WarpOp::All: f.result = ballot == (mask & ((lanes == 32 ? 0xffffffffull : (1ull << lanes) - 1))); break;
        }
        if (f.op == WarpOp::Shfl || f.op == WarpOp::ShflUp || f.op == WarpOp::ShflDown || f.op == WarpOp::ShflXor) {
          if (src < 0 || src >= int(lanes) || !(mask >> src & 1u)) {
            fail(thread_name(w0 + k) + " (" + op_name(f.op) + "): reads lane " + std::to_string(src) +
                 ", which is not in the mask");
            break;
          }
          f.result = fibers[w0 + src].value;
        }
      }
      for (size_t k = 0; k < lanes; ++k)
        if (mask >> k & 1u) fibers[w0 + k].state = State::Ready;
      progressed = true;
    }
  }
  return progressed;
}

// ---- a block ---------------------------------------------------------------------------------

void run_block(size_t threads, std::vector<size_t>& order) {
  ++block_stamp;
  std::memset(shared_mem, kPoison, shared_used);
  for (size_t i = 0; i < threads; ++i) {
    Fiber& f = fibers[i];
    if (!f.stack) {
      f.stack.reset(new char[kStackBytes]);
      getcontext(&f.context);
    }
    f.index = uint3{unsigned(i % blockDim.x), unsigned(i / blockDim.x % blockDim.y), unsigned(i / (blockDim.x * blockDim.y))};
    f.state = State::Ready;
    f.barriers = 0;
    f.log.clear();
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
  }
  while (!fatal) {
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i : order) {
      if (fibers[i].state != State::Ready) continue;
      current = i;
      threadIdx = fibers[i].index;
      in_kernel = true;
      swapcontext(&scheduler, &fibers[i].context);
      in_kernel = false;
      if (fatal) return;
    }
    if (resolve_warps(threads)) continue;
    if (fatal) return;
    // Nobody can move: a barrier for all, the end, or threads waiting on ones that finished.
    size_t waiting = threads, done = threads;
    for (size_t i = 0; i < threads; ++i) {
      if (fibers[i].state == State::Barrier) waiting = std::min(waiting, i);
      if (fibers[i].state == State::Done) done = std::min(done, i);
    }
    if (sampling) count_phase(threads);
    if (waiting == threads) return;  // all done
    if (done < threads) {
      fail("threads reach different numbers of __syncthreads: " + thread_name(done) + " finished after " +
           std::to_string(fibers[done].barriers) + ", while " + thread_name(waiting) + " waits at barrier " +
           std::to_string(fibers[waiting].barriers));
      return;
    }
    for (size_t i = 0; i < threads; ++i) fibers[i].state = State::Ready;
  }
}

void write_report(dim3 grid, dim3 block) {
  FILE* f = settings().report;
  if (!f) return;
  const Counters& c = counters;
  std::fprintf(f,
               "{\"kernel\": \"%s\", \"grid\": [%u, %u, %u], \"block\": [%u, %u, %u], \"shared_bytes\": %zu, "
               "\"sampled_blocks\": %" PRIu64 ", \"sampled_threads\": %" PRIu64 ", "
               "\"global\": {\"requests\": %" PRIu64 ", \"sectors\": %" PRIu64 ", \"ideal_sectors\": %" PRIu64
               ", \"bytes\": %" PRIu64 ", \"loads\": %" PRIu64 ", \"stores\": %" PRIu64 ", \"worst_pc\": \"%s\"}, "
               "\"shared\": {\"requests\": %" PRIu64 ", \"wavefronts\": %" PRIu64 ", \"ideal_wavefronts\": %" PRIu64
               ", \"conflicts\": %" PRIu64 ", \"worst_ways\": %d, \"worst_pc\": \"%s\", \"loads\": %" PRIu64
               ", \"stores\": %" PRIu64 "}, \"object\": \"%s\", \"error\": %s}\n",
               kernel.c_str(), grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_used, c.blocks, c.threads,
               c.gRequests, c.gSectors, c.gIdealSectors, c.gBytes, c.gLoads, c.gStores,
               c.worstGlobalPc ? pc_offset(c.worstGlobalPc).c_str() : "", c.sRequests, c.sWavefronts,
               c.sIdealWavefronts, c.sConflicts, c.worstWays, c.worstSharedPc ? pc_offset(c.worstSharedPc).c_str() : "",
               c.sLoads, c.sStores, [] {
                 Dl_info info;
                 return dladdr(reinterpret_cast<void*>(&fiber_main), &info) && info.dli_fname ? info.dli_fname : "";
               }(), first_error.empty() ? "false" : "true");
  std::fflush(f);
}

}  // namespace

void syncthreads() {
  Fiber& f = fibers[current];
  f.state = State::Barrier;
  f.barriers++;
  swapcontext(&f.context, &scheduler);
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width) {
  Fiber& f = fibers[current];
  if (width < 1 || width > 32 || (width & (width - 1))) {
    fail(thread_name(current) + " (" + op_name(op) + "): width " + std::to_string(width) + " is not a power of 2 up to 32");
    width = 32;
  }
  f.state = State::Warp;
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.result = 0;
  swapcontext(&f.context, &scheduler);
  return fibers[current].result;
}

void* shared_array(const void* tag, size_t bytes, size_t align, const char* name) {
  for (const SharedArray& s : shared_arrays)
    if (s.tag == tag) return shared_mem + s.offset;
  size_t offset = (shared_used + align - 1) / align * align;
  if (offset + bytes > kStaticSharedLimit) {
    fail(std::string("__shared__ ") + name + " takes the block's static shared memory past 48 KiB");
    offset = 0;  // the launch fails; keep the kernel inside the buffer until it stops
    if (bytes > kSharedBuffer) std::abort();
  } else {
    shared_used = offset + bytes;
    std::memset(shared_mem + offset, kPoison, bytes);
  }
  shared_arrays.push_back(SharedArray{tag, offset, bytes, name});
  return shared_mem + offset;
}

void* device_alloc(size_t bytes) { return arena().alloc(bytes); }
void device_free(void* p) { arena().release(p); }

const char* error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorLaunchFailure: return error_message.c_str();
    case cudaErrorInvalidConfiguration: return "invalid launch configuration (emulated)";
    case cudaErrorMemoryAllocation: return "out of emulated device memory";
    default: return "emulated launch error";
  }
}

void launch(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body, const std::string& name) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  Settings& s = settings();
  if (!rng_seeded) { rng.seed(s.seed); rng_seeded = true; }
  if (!valid_launch(grid, block) || smem > kStaticSharedLimit) {
    std::fprintf(stderr, "cuda_emu: bad launch of %s: grid (%u, %u, %u), block (%u, %u, %u), %zu bytes shared\n",
                 name.c_str(), grid.x, grid.y, grid.z, block.x, block.y, block.z, smem);
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (smem) {
    std::fprintf(stderr, "cuda_emu: %s: dynamic shared memory is not emulated\n", name.c_str());
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  const size_t threads = size_t(block.x) * block.y * block.z;
  gridDim = grid;
  blockDim = block;
  kernel_body = &body;
  kernel = name;
  first_error.clear();
  fatal = false;
  reported_unwritten = reported_race = reported_overflow = reported_misaligned = 0;
  counters = Counters();
  shared_arrays.clear();
  shared_used = 0;
  ++launch_id;
  if (fibers.size() < threads) fibers.resize(threads);
  std::vector<size_t> order(threads);
  for (size_t i = 0; i < threads; ++i) order[i] = i;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<uint32_t> blockOrder(blocks);
  for (uint64_t b = 0; b < blocks; ++b) blockOrder[b] = uint32_t(b);
  std::shuffle(blockOrder.begin(), blockOrder.end(), rng);
  const uint64_t run = s.sampledOnly ? std::min<uint64_t>(blocks, s.sample) : blocks;
  for (uint64_t b = 0; b < run && !fatal; ++b) {
    block_linear = blockOrder[b];
    blockIdx = block_coords(block_linear);
    sampling = b < s.sample;
    if (sampling) { counters.blocks++; counters.threads += threads; }
    run_block(threads, order);
  }
  sampling = false;
  write_report(grid, block);
  if (!first_error.empty()) {
    error_message = first_error + " [cuda_emu seed " + std::to_string(s.seed) + "]";
    last_error = cudaErrorLaunchFailure;
  }
}

// ---- atomics: outside the instrumented code, so never a race ----------------------------------

int atomic_add_i(int* p, int v) { int o = *p; *p = o + v; return o; }
unsigned atomic_add_u(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
unsigned long long atomic_add_ull(unsigned long long* p, unsigned long long v) { auto o = *p; *p = o + v; return o; }
float atomic_add_f(float* p, float v) { float o = *p; *p = o + v; return o; }
double atomic_add_d(double* p, double v) { double o = *p; *p = o + v; return o; }
int atomic_min_i(int* p, int v) { int o = *p; if (v < o) *p = v; return o; }
int atomic_max_i(int* p, int v) { int o = *p; if (v > o) *p = v; return o; }
int atomic_or_i(int* p, int v) { int o = *p; *p = o | v; return o; }
int atomic_exch_i(int* p, int v) { int o = *p; *p = v; return o; }
float atomic_exch_f(float* p, float v) { float o = *p; *p = v; return o; }
int atomic_cas_i(int* p, int compare, int v) { int o = *p; if (o == compare) *p = v; return o; }

}  // namespace emu

// ---- the -fsanitize=thread hooks of the kernel translation units --------------------------------

#define EMU_HOOK(size)                                                                                       \
  extern "C" void __tsan_read##size(void* p) { emu::on_access(p, size, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_write##size(void* p) { emu::on_access(p, size, true, __builtin_return_address(0)); } \
  extern "C" void __tsan_unaligned_read##size(void* p) { emu::on_access(p, size, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_unaligned_write##size(void* p) { emu::on_access(p, size, true, __builtin_return_address(0)); } \
  extern "C" void __tsan_volatile_read##size(void* p) { emu::on_access(p, size, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_volatile_write##size(void* p) { emu::on_access(p, size, true, __builtin_return_address(0)); }
EMU_HOOK(1)
EMU_HOOK(2)
EMU_HOOK(4)
EMU_HOOK(8)
EMU_HOOK(16)
extern "C" void __tsan_read_range(void* p, size_t n) { if (n) emu::on_access(p, n, false, __builtin_return_address(0)); }
extern "C" void __tsan_write_range(void* p, size_t n) { if (n) emu::on_access(p, n, true, __builtin_return_address(0)); }
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}
// Atomic operations of host code in those units (reference counts): done, not watched.
#define EMU_ATOMIC(bits, T)                                                                                      \
  extern "C" T __tsan_atomic##bits##_load(const volatile T* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
  extern "C" void __tsan_atomic##bits##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##bits##_exchange(volatile T* a, T v, int) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##bits##_fetch_add(volatile T* a, T v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##bits##_fetch_sub(volatile T* a, T v, int) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##bits##_fetch_and(volatile T* a, T v, int) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##bits##_fetch_or(volatile T* a, T v, int) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" int __tsan_atomic##bits##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {           \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                    \
  }                                                                                                              \
  extern "C" int __tsan_atomic##bits##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {             \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                     \
  }                                                                                                              \
  extern "C" T __tsan_atomic##bits##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                 \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                          \
    return c;                                                                                                    \
  }
EMU_ATOMIC(8, int8_t)
EMU_ATOMIC(16, int16_t)
EMU_ATOMIC(32, int32_t)
EMU_ATOMIC(64, int64_t)
extern "C" void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
extern "C" void __tsan_atomic_signal_fence(int) {}
