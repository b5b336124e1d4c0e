// Python bindings of the net family.
#include "bindings/convert.h"

namespace ccn::bindings {

void bind_net(py::module_& m) { (void)m; }

}  // namespace ccn::bindings
