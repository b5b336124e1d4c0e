// Python bindings of the norm family.
#include "bindings/convert.h"

namespace ccn::bindings {

void bind_norm(py::module_& m) { (void)m; }

}  // namespace ccn::bindings
