// The normalization layers (rnorm, cmrnorm, cnorm) share their geometry, their input check
// and their re-settable parameters. Input and output are (channels * imgSizeY * imgSizeX,
// numCases). `scale` in the dict is already divided by size^2 (rnorm, cnorm) or by size
// (cmrnorm), so it is the ops' addScale; `pow` is powScale.
#pragma once
#include "core/error.h"
#include "net/layer.h"
#include "ops/norm.h"

namespace ccn::net {

class NormLayer : public Layer {
 public:
  explicit NormLayer(const LayerConfig& cfg) : Layer(cfg) {
    NormGeometry& g = geometry_;
    g.channels = cfg.getInt("channels");
    g.imgSizeY = cfg.getInt("imgSizeY");
    g.imgSizeX = cfg.getInt("imgSizeX");
    g.size = cfg.getInt("size");
    g.addScale = static_cast<float>(cfg.getFloat("scale"));
    g.powScale = static_cast<float>(cfg.getFloat("pow"));
    g.minDiv = static_cast<float>(cfg.getFloat("minDiv", 1.0));
    g.blocked = cfg.getBool("blocked", false);
    for (const char* key : {"channels", "imgSizeY", "imgSizeX", "size"})
      if (cfg.getInt(key) <= 0) cfg.fail(key, "must be positive, got " + std::to_string(cfg.getInt(key)));
    try {
      ops::checkGeometry(g);
    } catch (const ValueError& e) {
      cfg.failLayer(e.what());
    }
    int64_t rows = int64_t(g.channels) * g.imgSizeY * g.imgSizeX;
    if (outputs_ != rows) cfg.fail("outputs", "must be channels * imgSizeY * imgSizeX = " + std::to_string(rows));
  }

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, outputs_, "channels * imgSizeY * imgSizeX");
  }

  bool setParam(const std::string& key, double value) override {
    if (key == "scale") geometry_.addScale = static_cast<float>(value);
    else if (key == "pow") geometry_.powScale = static_cast<float>(value);
    else return false;
    return true;
  }

  void resize(int numCases) override { denoms_ = Tensor::empty({outputs_, numCases}, acts().device()); }

 protected:
  NormGeometry geometry_;
  Tensor denoms_;  // the forward pass's denominators, reused by the backward pass
};

}  // namespace ccn::net
