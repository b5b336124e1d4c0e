// Python bindings of the pool family.
#include "bindings/convert.h"

namespace ccn::bindings {

void bind_pool(py::module_& m) { (void)m; }

}  // namespace ccn::bindings
