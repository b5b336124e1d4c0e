// LayerConfig: one resolved layer dict (docs/layer-dicts.md) as plain C++ values, with typed
// getters whose errors name the layer and the key ("layer 'conv1': missing key 'filterSize'").
// The bindings build it from a Python dict; the engine never sees Python objects.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ccn::net {

// A value of a layer dict: None, bool, int, float, str, list or dict of values.
struct ConfigValue {
  enum class Kind { None, Bool, Int, Float, String, List, Dict, Other };
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // the string; for Other, the Python type's name
  std::vector<ConfigValue> list;
  std::map<std::string, ConfigValue> dict;

  // "int", "list", ... (the Python type name, for error messages)
  std::string typeName() const;
};

class LayerConfig {
 public:
  // entries must hold "name" (a str).
  explicit LayerConfig(std::map<std::string, ConfigValue> entries);

  const std::string& name() const { return name_; }
  bool has(const std::string& key) const;  // present and not None

  int getInt(const std::string& key) const;
  int getInt(const std::string& key, int fallback) const;
  double getFloat(const std::string& key) const;  // an int is accepted too
  double getFloat(const std::string& key, double fallback) const;
  bool getBool(const std::string& key) const;  // a bool, or the int 0 / 1
  bool getBool(const std::string& key, bool fallback) const;
  std::string getString(const std::string& key) const;
  std::string getString(const std::string& key, const std::string& fallback) const;
  std::vector<std::string> getStringList(const std::string& key) const;
  // A list of ints (a single int stands for a one-element list).
  std::vector<int> getIntList(const std::string& key) const;
  // A list of `count` ints (one per input); a single int stands for `count` copies of itself.
  std::vector<int> getIntList(const std::string& key, size_t count) const;
  std::vector<int> getIntList(const std::string& key, size_t count, int fallback) const;
  // A list of `count` entries, each a list of ints or None (an empty vector); absent: all empty.
  std::vector<std::vector<int>> getIntLists(const std::string& key, size_t count) const;
  // A list of `count` numbers; a single number stands for `count` copies of itself.
  std::vector<double> getFloatList(const std::string& key, size_t count) const;
  std::vector<double> getFloatList(const std::string& key, size_t count, double fallback) const;
  // A list of `count` strings where None / "" mean "no value" (empty string); a single
  // string stands for a one-element list. Absent: `count` empty strings.
  std::vector<std::string> getOptionalStrings(const std::string& key, size_t count) const;

  // Throws ValueError "layer '<name>': key '<key>': <message>".
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  // Throws ValueError "layer '<name>': <message>".
  [[noreturn]] void failLayer(const std::string& message) const;

 private:
  const ConfigValue& get(const std::string& key) const;  // present, else "missing key"
  double asFloat(const std::string& key, const ConfigValue& v) const;
  int asInt(const std::string& key, const ConfigValue& v) const;

  std::map<std::string, ConfigValue> entries_;
  std::string name_;
};

}  // namespace ccn::net
