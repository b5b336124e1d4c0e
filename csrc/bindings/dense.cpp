// Python bindings of the dense family.
#include "bindings/convert.h"

namespace ccn::bindings {

void bind_dense(py::module_& m) { (void)m; }

}  // namespace ccn::bindings
