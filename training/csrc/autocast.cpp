// Autocast controls that tch does not expose: per-device enable flag and compute dtype.
// Only the light c10 enum headers are included (ATen/autocast_mode.h pulls in all of ATen
// and would add most of a minute to every rebuild of the build script); the declarations
// below repeat those of ATen/autocast_mode.h, and a mismatch fails at link time, not later.
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <exception>

namespace at::autocast {
bool is_autocast_enabled(c10::DeviceType device_type);
void set_autocast_enabled(c10::DeviceType device_type, bool enabled);
c10::ScalarType get_autocast_dtype(c10::DeviceType device_type);
void set_autocast_dtype(c10::DeviceType device_type, c10::ScalarType dtype);
void clear_cache();
int increment_nesting();
int decrement_nesting();
}  // namespace at::autocast

extern "C" {

// Reads the autocast state of `device_type` (a c10::DeviceType code) into `enabled` and
// `dtype` (a c10::ScalarType code). Returns 0, or 1 when libtorch threw.
int facepipe_autocast_get(int device_type, int* enabled, int* dtype) {
  try {
    auto d = static_cast<c10::DeviceType>(device_type);
    *enabled = at::autocast::is_autocast_enabled(d) ? 1 : 0;
    *dtype = static_cast<int>(at::autocast::get_autocast_dtype(d));
    return 0;
  } catch (const std::exception&) {
    return 1;
  }
}

// Sets the autocast state of `device_type`. Returns 0, or 1 when libtorch threw (e.g. a
// dtype the device's autocast does not support).
int facepipe_autocast_set(int device_type, int enabled, int dtype) {
  try {
    auto d = static_cast<c10::DeviceType>(device_type);
    at::autocast::set_autocast_dtype(d, static_cast<c10::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(d, enabled != 0);
    return 0;
  } catch (const std::exception&) {
    return 1;
  }
}

// Nesting depth bookkeeping: the cast-weight cache is cleared when the outermost region ends.
int facepipe_autocast_enter() {
  try {
    return at::autocast::increment_nesting();
  } catch (const std::exception&) {
    return -1;
  }
}

int facepipe_autocast_exit() {
  try {
    int depth = at::autocast::decrement_nesting();
    if (depth == 0) {
      at::autocast::clear_cache();
    }
    return depth;
  } catch (const std::exception&) {
    return -1;
  }
}

}  // extern "C"
