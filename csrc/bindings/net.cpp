// Python bindings of the layer graph: ccn._core.Net (see docs/net-api.md). Layer dicts become
// LayerConfigs here, so the engine never touches Python objects; passes run with the GIL
// released.
#include <pybind11/stl.h>

#include "bindings/convert.h"
#include "core/error.h"
#include "net/net.h"

namespace ccn::bindings {
namespace {

using net::ConfigValue;
using net::LayerConfig;
using net::Net;

ConfigValue toConfigValue(py::handle obj) {
  ConfigValue v;
  if (obj.is_none()) return v;
  if (py::isinstance<py::bool_>(obj)) {
    v.kind = ConfigValue::Kind::Bool;
    v.b = obj.cast<bool>();
  } else if (py::isinstance<py::int_>(obj) || py::hasattr(obj, "__index__")) {  // NumPy integers too
    v.kind = ConfigValue::Kind::Int;
    PyObject* index = PyNumber_Index(obj.ptr());
    if (!index) throw py::error_already_set();
    int overflow = 0;
    v.i = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (overflow) {  // the typed getters then name the layer and key
      v.kind = ConfigValue::Kind::Other;
      v.s = "an int beyond 64 bits";
    }
  } else if (py::isinstance<py::float_>(obj) ||
             py::isinstance(obj, py::module_::import("numpy").attr("floating"))) {
    v.kind = ConfigValue::Kind::Float;
    v.f = obj.cast<double>();
  } else if (py::isinstance<py::str>(obj)) {
    v.kind = ConfigValue::Kind::String;
    v.s = obj.cast<std::string>();
  } else if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    v.kind = ConfigValue::Kind::List;
    for (py::handle item : obj) v.list.push_back(toConfigValue(item));
  } else if (py::isinstance<py::dict>(obj)) {
    v.kind = ConfigValue::Kind::Dict;
    for (auto kv : py::reinterpret_borrow<py::dict>(obj)) v.dict[py::str(kv.first)] = toConfigValue(kv.second);
  } else {
    v.kind = ConfigValue::Kind::Other;
    v.s = py::str(py::type::of(obj).attr("__name__"));
  }
  return v;
}

LayerConfig toLayerConfig(py::handle obj, size_t position) {
  CCN_CHECK_TYPE(py::isinstance<py::dict>(obj), "layers[", position, "] must be a dict, got ",
                 std::string(py::str(py::type::of(obj).attr("__name__"))));
  std::map<std::string, ConfigValue> entries;
  for (auto kv : py::reinterpret_borrow<py::dict>(obj)) {
    CCN_CHECK_TYPE(py::isinstance<py::str>(kv.first), "layers[", position, "] has a key that is not a str");
    entries[kv.first.cast<std::string>()] = toConfigValue(kv.second);
  }
  return LayerConfig(std::move(entries));
}

// A float32 C-contiguous view of any array-like (copied only when it must be converted).
struct HostArray {
  py::array_t<float, py::array::c_style | py::array::forcecast> array;
  Tensor tensor;
};

HostArray toHostArray(py::handle obj, const std::string& layer, const std::string& what) {
  HostArray h;
  h.array = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!h.array) {
    PyErr_Clear();
    throw TypeError("layer '" + layer + "': '" + what + "' must be an array of numbers");
  }
  Shape shape(h.array.shape(), h.array.shape() + h.array.ndim());
  h.tensor = Tensor::wrap(h.array.mutable_data(), shape, contiguous_strides(shape), Device::cpu(), nullptr);
  return h;
}

std::vector<Tensor> toDataTensors(const py::list& data) {
  std::vector<Tensor> tensors;
  for (size_t i = 0; i < data.size(); ++i) {
    std::string name = "data[" + std::to_string(i) + "]";
    tensors.push_back(as_tensor(data[i], name.c_str()));
  }
  return tensors;
}

py::dict costsDict(const Net& net) {
  py::dict out;
  for (const auto& [name, r] : net.costs()) {
    py::list values;
    values.append(r.cost);
    values.append(r.error);
    values.append(r.errorTopK);
    out[py::str(name)] = values;
  }
  return out;
}

}  // namespace

void bind_net(py::module_& m) {
  py::class_<Net>(m, "Net", "The layer graph built from resolved layer dicts, on logical devices.")
      .def(py::init([](const py::list& layers, const py::list& devices, py::int_ seed) {
             std::vector<LayerConfig> configs;
             for (size_t i = 0; i < layers.size(); ++i) configs.push_back(toLayerConfig(layers[i], i));
             std::vector<std::string> names;
             for (py::handle d : devices) {
               CCN_CHECK_TYPE(py::isinstance<py::str>(d) || py::isinstance<py::int_>(d),
                              "devices: each entry must be 'cpu', a CUDA ordinal or 'cuda:N'");
               names.push_back(py::str(d));
             }
             CCN_CHECK(seed >= py::int_(0), "seed must be >= 0");
             return std::make_unique<Net>(configs, names, seed.cast<uint64_t>());
           }),
           py::arg("layers"), py::arg("devices"), py::arg("seed") = 0)
      .def("layer_names", &Net::layerNames)
      .def("weight_layer_names", &Net::weightLayerNames)
      .def("get_params", [](const Net& net, const std::string& name) {
        py::list weights, incs;
        for (size_t i = 0; i < net.numWeights(name); ++i) {
          weights.append(to_numpy(net.param(name, "weights", i)));
          incs.append(to_numpy(net.param(name, "weightsInc", i)));
        }
        py::dict d;
        d["weights"] = weights;
        d["biases"] = to_numpy(net.param(name, "biases", 0));
        d["weightsInc"] = incs;
        d["biasesInc"] = to_numpy(net.param(name, "biasesInc", 0));
        return d;
      }, py::arg("name"), "Copies of the weights, biases and their increments (momentum).")
      .def("set_params", [](Net& net, const std::string& name, const py::dict& params) {
        size_t count = net.numWeights(name);  // checks that the layer has weights
        for (auto kv : params) {
          std::string key = py::str(kv.first);
          if (key == "biases" || key == "biasesInc") {
            HostArray h = toHostArray(kv.second, name, key);
            net.setParam(name, key, 0, h.tensor);
            continue;
          }
          CCN_CHECK(key == "weights" || key == "weightsInc", "layer '", name, "': unknown parameter key '", key,
                    "' (expected weights, biases, weightsInc, biasesInc)");
          CCN_CHECK_TYPE(py::isinstance<py::list>(kv.second) || py::isinstance<py::tuple>(kv.second), "layer '",
                         name, "': '", key, "' must be a list of arrays (one per weight matrix)");
          py::sequence items = py::reinterpret_borrow<py::sequence>(kv.second);
          CCN_CHECK(items.size() == count, "layer '", name, "': '", key, "' must hold ", count, " array(s), got ",
                    items.size());
          for (size_t i = 0; i < count; ++i) {
            if (items[i].is_none()) continue;  // leave this matrix as it is
            HostArray h = toHostArray(items[i], name, key + "[" + std::to_string(i) + "]");
            net.setParam(name, key, i, h.tensor);
          }
        }
      }, py::arg("name"), py::arg("params"),
         "Sets any of weights (list; None keeps a matrix), biases, weightsInc, biasesInc; shapes are checked.")
      .def("set_learning_params", &Net::setLearningParams, py::arg("name"), py::arg("epsW"), py::arg("epsB"),
           py::arg("momW"), py::arg("momB"), py::arg("wc"))
      .def("set_layer_param", &Net::setLayerParam, py::arg("name"), py::arg("key"), py::arg("value"))
      .def("fprop", [](Net& net, const py::list& data, bool train) {
        std::vector<Tensor> tensors = toDataTensors(data);
        py::gil_scoped_release release;
        net.fprop(tensors, train);
      }, py::arg("data"), py::arg("train") = false)
      .def("bprop", &Net::bprop, py::call_guard<py::gil_scoped_release>())
      .def("start_bprop", &Net::startBprop, py::call_guard<py::gil_scoped_release>(),
           "Starts bprop and returns at once (see wait_gradients, finish_bprop).")
      .def("wait_gradients", &Net::waitGradients, py::arg("name"), py::call_guard<py::gil_scoped_release>(),
           "Returns when the layer's weight gradients of the running bprop are final.")
      .def("finish_bprop", &Net::finishBprop, py::call_guard<py::gil_scoped_release>(),
           "Waits for the bprop started by start_bprop; raises its error, if any.")
      .def("update", &Net::update, py::arg("num_cases"), py::call_guard<py::gil_scoped_release>())
      .def("train_step", [](Net& net, const py::list& data) {
        std::vector<Tensor> tensors = toDataTensors(data);
        {
          py::gil_scoped_release release;
          net.trainStep(tensors);
        }
        return costsDict(net);
      }, py::arg("data"), "fprop(train=True) + bprop + update; returns costs().")
      .def("stage_batch", [](Net& net, const py::list& data, int channel) {
        std::vector<Tensor> tensors = toDataTensors(data);
        py::gil_scoped_release release;
        net.stageBatch(tensors, channel);
      }, py::arg("data"), py::arg("channel") = 0,
         "Copies a whole data batch to the data layers' devices (asynchronously on CUDA) as the channel's "
         "next batch (channel 0: training, 1: testing).")
      .def("begin_batch", &Net::beginBatch, py::arg("channel") = 0, py::call_guard<py::gil_scoped_release>(),
           "Makes the channel's staged batch current (waiting for its copies); returns its number of cases.")
      .def("fprop_slice", &Net::fpropSlice, py::arg("start"), py::arg("end"), py::arg("train") = false,
           py::call_guard<py::gil_scoped_release>(), "fprop on cases [start, end) of the current batch.")
      .def("train_slice", [](Net& net, int start, int end) {
        {
          py::gil_scoped_release release;
          net.trainSlice(start, end);
        }
        return costsDict(net);
      }, py::arg("start"), py::arg("end"), "train_step on cases [start, end) of the current batch; returns costs().")
      .def("costs", &costsDict, "name -> [cost, error, errorTopK], sums over the cases of the last fprop")
      .def("get_acts", [](const Net& net, const std::string& name) { return to_numpy(net.acts(name)); },
           py::arg("name"))
      .def("get_grads", [](const Net& net, const std::string& name) {
        py::list weights;
        for (size_t i = 0; i < net.numWeights(name); ++i) weights.append(to_numpy(net.grad(name, "weights", i)));
        py::dict d;
        d["weights"] = weights;
        d["biases"] = to_numpy(net.grad(name, "biases", 0));
        return d;
      }, py::arg("name"), "Gradients of the objective from the last bprop (sums over the cases).")
      .def("set_grads", [](Net& net, const std::string& name, const py::dict& grads) {
        size_t count = net.numWeights(name);
        for (auto kv : grads) {
          std::string key = py::str(kv.first);
          if (key == "biases") {
            HostArray h = toHostArray(kv.second, name, key);
            net.setGrad(name, key, 0, h.tensor);
            continue;
          }
          CCN_CHECK(key == "weights", "layer '", name, "': unknown gradient key '", key, "' (expected weights, biases)");
          py::sequence items = py::reinterpret_borrow<py::sequence>(kv.second);
          CCN_CHECK(items.size() == count, "layer '", name, "': 'weights' must hold ", count, " array(s), got ",
                    items.size());
          for (size_t i = 0; i < count; ++i) {
            HostArray h = toHostArray(items[i], name, "weights[" + std::to_string(i) + "]");
            net.setGrad(name, key, i, h.tensor);
          }
        }
      }, py::arg("name"), py::arg("grads"),
         "Replaces the last bprop's gradients (weights: list, biases) before update(), e.g. by their sum over "
         "processes.")
      .def("grad_tensors", [](const Net& net, const std::string& name) {
        py::list out;
        for (const Tensor& t : net.gradBuffers(name)) out.append(py::cast(t));
        return out;
      }, py::arg("name"),
         "The layer's gradient buffers that the last bprop wrote (weights, then biases; frozen ones left "
         "out), as Tensors on the layer's device: summing them in place across processes (NCCL) feeds update().")
      .def("set_shard", &Net::setShard, py::arg("index"), py::arg("count"),
           "This net's minibatches are shard `index` of `count` equal shards of each step's minibatch (random "
           "numbers are drawn per case of the whole minibatch).")
      .def_property("rng_counter", &Net::rngCounter, &Net::setRngCounter)
      .def("check_finite", [](const Net& net) -> py::object {
        std::string where = net.firstNonFinite();
        return where.empty() ? py::object(py::none()) : py::object(py::str(where));
      }, "None when every activation, gradient and weight of the last pass is finite, else where NaN or Inf "
         "first appeared: \"the activations of layer 'x'\", \"the gradients computed by layer 'x'\" or "
         "\"the weights of layer 'x'\".");
}

}  // namespace ccn::bindings
