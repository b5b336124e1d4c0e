// The scaleTargets / scaleOutput rule shared by every CPU routine.
#pragma once
#include <cstdint>

namespace ccn::cpu {

// target = scaleTargets * target + scaleOutput * value. When scaleTargets is 0 the old
// target is not read, so an uninitialised (even NaN) target is simply overwritten.
inline void store_scaled(float& target, float value, float scaleTargets, float scaleOutput) {
  target = scaleTargets == 0.f ? scaleOutput * value : scaleTargets * target + scaleOutput * value;
}

// store_scaled over a row: targets[k] = scaleTargets * targets[k] + scaleOutput * value(k),
// with the test of scaleTargets taken out of the loop so that both loops vectorize.
template <class Value>
void store_scaled_row(float* targets, int64_t count, float scaleTargets, float scaleOutput, const Value& value) {
  if (scaleTargets == 0.f) {
    for (int64_t k = 0; k < count; ++k) targets[k] = scaleOutput * value(k);
  } else {
    for (int64_t k = 0; k < count; ++k) targets[k] = scaleTargets * targets[k] + scaleOutput * value(k);
  }
}

}  // namespace ccn::cpu
