// local: a locally-connected layer, the convolution family with untied weights (a filter
// bank per output position) and untied biases (see conv.h).
#include "layers/conv.h"

namespace ccn::net {
namespace {

std::unique_ptr<Layer> makeLocal(const LayerConfig& cfg) { return std::make_unique<ConvLayer>(cfg, true); }
[[maybe_unused]] const bool registered = registerLayerType("local", makeLocal);

}  // namespace
}  // namespace ccn::net
