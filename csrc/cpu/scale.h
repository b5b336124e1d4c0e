// The scaleTargets / scaleOutput rule shared by every CPU routine.
#pragma once

namespace ccn::cpu {

// target = scaleTargets * target + scaleOutput * value. When scaleTargets is 0 the old
// target is not read, so an uninitialised (even NaN) target is simply overwritten.
inline void store_scaled(float& target, float value, float scaleTargets, float scaleOutput) {
  target = scaleTargets == 0.f ? scaleOutput * value : scaleTargets * target + scaleOutput * value;
}

}  // namespace ccn::cpu
