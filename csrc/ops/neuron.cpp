// Checked entry points of the neuron family, and the parser for neuron names.
#include "ops/neuron.h"

#include <cstdlib>
#include <vector>

#include "ops/check.h"

namespace ccn {

Neuron Neuron::parse(const std::string& text) {
  struct Kind {
    const char* name;
    NeuronType type;
    int params;  // how many of [a, b] the name takes
  };
  static const Kind kinds[] = {
      {"ident", NeuronType::Ident, 0},     {"relu", NeuronType::Relu, 0},
      {"logistic", NeuronType::Logistic, 0}, {"tanh", NeuronType::Tanh, 2},
      {"abs", NeuronType::Abs, 0},         {"square", NeuronType::Square, 0},
      {"sqrt", NeuronType::Sqrt, 0},       {"softrelu", NeuronType::SoftRelu, 0},
      {"brelu", NeuronType::BRelu, 1},     {"linear", NeuronType::Linear, 2},
      {"abstanh", NeuronType::AbsTanh, 2},
  };
  std::string name = text, args;
  size_t open = text.find('[');
  if (open != std::string::npos) {
    CCN_CHECK(text.back() == ']', "neuron '", text, "': missing ']'");
    name = text.substr(0, open);
    args = text.substr(open + 1, text.size() - open - 2);
  }
  std::vector<float> values;
  size_t pos = 0;
  while (!args.empty() && pos <= args.size()) {
    size_t comma = args.find(',', pos);
    std::string item = args.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    float v = std::strtof(item.c_str(), &end);
    CCN_CHECK(!item.empty() && end && *end == '\0', "neuron '", text, "': '", item, "' is not a number");
    values.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  for (const Kind& k : kinds) {
    if (name != k.name) continue;
    CCN_CHECK(values.empty() || static_cast<int>(values.size()) == k.params, "neuron '", text, "' takes ",
              k.params, " parameter(s), got ", values.size());
    Neuron n;
    n.type = k.type;
    if (k.type == NeuronType::BRelu) n.a = values.empty() ? 1.f : values[0];
    if (k.params == 2 && values.size() == 2) {
      n.a = values[0];
      n.b = values[1];
    } else if (k.type == NeuronType::Linear) {
      n.a = 1.f;
      n.b = 0.f;
    }
    return n;
  }
  throw ValueError("unknown neuron '" + text +
                   "' (expected ident, relu, logistic, tanh[a,b], abs, square, sqrt, softrelu, brelu[a], "
                   "linear[a,b] or abstanh[a,b])");
}

namespace ops {

void neuronAct(const Tensor& inputs, Tensor& targets, const Neuron& neuron, float scaleTargets,
               float scaleOutput) {
  Device d = common_device({{"inputs", &inputs}, {"targets", &targets}});
  check_numel(inputs, "inputs", inputs.numel());
  check_numel(targets, "targets", inputs.numel());
  CCN_DISPATCH(d, neuronAct, inputs, targets, neuron, scaleTargets, scaleOutput);
}

void neuronGrad(const Tensor& outGrads, const Tensor& inputs, const Tensor& acts, Tensor& targets,
                const Neuron& neuron, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"outGrads", &outGrads}, {"inputs", &inputs}, {"acts", &acts}, {"targets", &targets}});
  int64_t n = outGrads.numel();
  check_numel(outGrads, "outGrads", n);
  check_numel(inputs, "inputs", n);
  check_numel(acts, "acts", n);
  check_numel(targets, "targets", n);
  CCN_DISPATCH(d, neuronGrad, outGrads, inputs, acts, targets, neuron, scaleTargets, scaleOutput);
}

}  // namespace ops
}  // namespace ccn
