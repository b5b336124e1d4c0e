// Typed access to a layer dict; every error names the layer and the key.
#include "net/layer_config.h"

#include "core/error.h"

namespace ccn::net {

std::string ConfigValue::typeName() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Other: return s;
  }
  return "?";
}

LayerConfig::LayerConfig(std::map<std::string, ConfigValue> entries) : entries_(std::move(entries)) {
  auto it = entries_.find("name");
  CCN_CHECK(it != entries_.end(), "a layer dict has no key 'name'");
  CCN_CHECK(it->second.kind == ConfigValue::Kind::String && !it->second.s.empty(),
            "a layer dict's 'name' must be a non-empty str, got ", it->second.typeName());
  name_ = it->second.s;
}

void LayerConfig::fail(const std::string& key, const std::string& message) const {
  throw ValueError("layer '" + name_ + "': key '" + key + "': " + message);
}

void LayerConfig::failLayer(const std::string& message) const {
  throw ValueError("layer '" + name_ + "': " + message);
}

bool LayerConfig::has(const std::string& key) const {
  auto it = entries_.find(key);
  return it != entries_.end() && it->second.kind != ConfigValue::Kind::None;
}

const ConfigValue& LayerConfig::get(const std::string& key) const {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.kind == ConfigValue::Kind::None)
    throw ValueError("layer '" + name_ + "': missing key '" + key + "'");
  return it->second;
}

int LayerConfig::getInt(const std::string& key) const {
  const ConfigValue& v = get(key);
  if (v.kind != ConfigValue::Kind::Int) fail(key, "must be an int, got " + v.typeName());
  if (v.i < INT32_MIN || v.i > INT32_MAX) fail(key, "value " + std::to_string(v.i) + " does not fit an int32");
  return static_cast<int>(v.i);
}

int LayerConfig::getInt(const std::string& key, int fallback) const {
  return has(key) ? getInt(key) : fallback;
}

int LayerConfig::asInt(const std::string& key, const ConfigValue& v) const {
  if (v.kind != ConfigValue::Kind::Int) fail(key, "must be an int, got " + v.typeName());
  if (v.i < INT32_MIN || v.i > INT32_MAX) fail(key, "value " + std::to_string(v.i) + " does not fit an int32");
  return static_cast<int>(v.i);
}

std::vector<int> LayerConfig::getIntList(const std::string& key, size_t count) const {
  const ConfigValue& v = get(key);
  if (v.kind != ConfigValue::Kind::List) return std::vector<int>(count, asInt(key, v));
  if (v.list.size() != count)
    fail(key, "must have " + std::to_string(count) + " element(s) (one per input), got " + std::to_string(v.list.size()));
  std::vector<int> out;
  for (const ConfigValue& item : v.list) out.push_back(asInt(key, item));
  return out;
}

std::vector<std::vector<int>> LayerConfig::getIntLists(const std::string& key, size_t count) const {
  std::vector<std::vector<int>> out(count);
  if (!has(key)) return out;
  const ConfigValue& v = get(key);
  if (v.kind != ConfigValue::Kind::List || v.list.size() != count)
    fail(key, "must be a list of " + std::to_string(count) + " entries (one per input: a list of ints or None)");
  for (size_t i = 0; i < count; ++i) {
    const ConfigValue& item = v.list[i];
    if (item.kind == ConfigValue::Kind::None) continue;
    if (item.kind != ConfigValue::Kind::List) fail(key, "entry " + std::to_string(i) + " must be a list or None");
    for (const ConfigValue& x : item.list) out[i].push_back(asInt(key, x));
  }
  return out;
}

std::vector<int> LayerConfig::getIntList(const std::string& key, size_t count, int fallback) const {
  return has(key) ? getIntList(key, count) : std::vector<int>(count, fallback);
}

double LayerConfig::asFloat(const std::string& key, const ConfigValue& v) const {
  if (v.kind == ConfigValue::Kind::Float) return v.f;
  if (v.kind == ConfigValue::Kind::Int) return static_cast<double>(v.i);
  fail(key, "must be a number, got " + v.typeName());
}

double LayerConfig::getFloat(const std::string& key) const { return asFloat(key, get(key)); }

double LayerConfig::getFloat(const std::string& key, double fallback) const {
  return has(key) ? getFloat(key) : fallback;
}

bool LayerConfig::getBool(const std::string& key) const {
  const ConfigValue& v = get(key);
  if (v.kind == ConfigValue::Kind::Bool) return v.b;
  if (v.kind == ConfigValue::Kind::Int && (v.i == 0 || v.i == 1)) return v.i == 1;
  fail(key, "must be a bool, got " + v.typeName());
}

bool LayerConfig::getBool(const std::string& key, bool fallback) const {
  return has(key) ? getBool(key) : fallback;
}

std::string LayerConfig::getString(const std::string& key) const {
  const ConfigValue& v = get(key);
  if (v.kind != ConfigValue::Kind::String) fail(key, "must be a str, got " + v.typeName());
  return v.s;
}

std::string LayerConfig::getString(const std::string& key, const std::string& fallback) const {
  return has(key) ? getString(key) : fallback;
}

std::vector<std::string> LayerConfig::getStringList(const std::string& key) const {
  const ConfigValue& v = get(key);
  if (v.kind != ConfigValue::Kind::List) fail(key, "must be a list of str, got " + v.typeName());
  std::vector<std::string> out;
  for (const ConfigValue& item : v.list) {
    if (item.kind != ConfigValue::Kind::String) fail(key, "must be a list of str, has an element of type " + item.typeName());
    out.push_back(item.s);
  }
  return out;
}

std::vector<int> LayerConfig::getIntList(const std::string& key) const {
  const ConfigValue& v = get(key);
  std::vector<ConfigValue> items = v.kind == ConfigValue::Kind::List ? v.list : std::vector<ConfigValue>{v};
  std::vector<int> out;
  for (const ConfigValue& item : items) {
    if (item.kind != ConfigValue::Kind::Int) fail(key, "must be a list of int, has an element of type " + item.typeName());
    if (item.i < INT32_MIN || item.i > INT32_MAX) fail(key, "value " + std::to_string(item.i) + " does not fit an int32");
    out.push_back(static_cast<int>(item.i));
  }
  return out;
}

std::vector<double> LayerConfig::getFloatList(const std::string& key, size_t count) const {
  const ConfigValue& v = get(key);
  if (v.kind != ConfigValue::Kind::List) return std::vector<double>(count, asFloat(key, v));
  if (v.list.size() != count)
    fail(key, "must have " + std::to_string(count) + " element(s) (one per input), got " + std::to_string(v.list.size()));
  std::vector<double> out;
  for (const ConfigValue& item : v.list) out.push_back(asFloat(key, item));
  return out;
}

std::vector<double> LayerConfig::getFloatList(const std::string& key, size_t count, double fallback) const {
  return has(key) ? getFloatList(key, count) : std::vector<double>(count, fallback);
}

std::vector<std::string> LayerConfig::getOptionalStrings(const std::string& key, size_t count) const {
  if (!has(key)) return std::vector<std::string>(count);
  const ConfigValue& v = get(key);
  std::vector<ConfigValue> items = v.kind == ConfigValue::Kind::List ? v.list : std::vector<ConfigValue>{v};
  if (items.size() != count)
    fail(key, "must have " + std::to_string(count) + " element(s) (one per input), got " + std::to_string(items.size()));
  std::vector<std::string> out;
  for (const ConfigValue& item : items) {
    if (item.kind == ConfigValue::Kind::None) out.emplace_back();
    else if (item.kind == ConfigValue::Kind::String) out.push_back(item.s);
    else fail(key, "must hold str or None, has an element of type " + item.typeName());
  }
  return out;
}

}  // namespace ccn::net
