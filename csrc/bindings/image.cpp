// Python bindings of the image family.
#include "bindings/convert.h"

namespace ccn::bindings {

void bind_image(py::module_& m) { (void)m; }

}  // namespace ccn::bindings
