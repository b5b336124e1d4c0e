// Python bindings of the conv family.
#include "bindings/convert.h"

namespace ccn::bindings {

void bind_conv(py::module_& m) { (void)m; }

}  // namespace ccn::bindings
