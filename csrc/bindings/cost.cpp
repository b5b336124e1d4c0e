// Python bindings of the cost family.
#include "bindings/convert.h"

namespace ccn::bindings {

void bind_cost(py::module_& m) { (void)m; }

}  // namespace ccn::bindings
