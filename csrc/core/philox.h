// Philox4x32-10: a counter-based random number generator (Salmon et al., SC'11).
// The n-th random number of a stream is a pure function of (seed, counter), so the CPU
// and CUDA backends draw identical numbers, any thread can draw any element without
// shared state, and a resumed run continues exactly where it stopped.
#pragma once
#include <cstdint>

#include "core/host_device.h"

namespace ccn {

struct Philox4 {
  uint32_t v[4];
};

CCN_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Four 32-bit random words for block `counter` of stream `seed`.
CCN_HOST_DEVICE Philox4 philox4x32(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// A uniform float in [0, 1) from a 32-bit word (24 significant bits).
CCN_HOST_DEVICE float uniform_from_bits(uint32_t bits) { return (bits >> 8) * (1.0f / 16777216.0f); }

// The uniform number at position `index` of stream `seed` (element i uses word i % 4 of block i / 4).
CCN_HOST_DEVICE float philox_uniform(uint64_t seed, uint64_t index) {
  Philox4 r = philox4x32(seed, index >> 2);
  return uniform_from_bits(r.v[index & 3]);
}

}  // namespace ccn
