"""cuda-convnet's two layer files -> the resolved layer list of docs/layer-dicts.md.

A net is described by two INI files, as in cuda-convnet:

* the layer definition file (``layers.cfg``): one ``[section]`` per layer, named by the
  section, with ``type=`` and the keys of that type (geometry, inputs, initialisation);
* the layer-params file (``layer-params.cfg``): the learning parameters, one section per
  layer that has any (``epsW``, ``epsB``, ``momW``, ``momB``, ``wc`` for conv/local/fc),
  plus the "tunable" values a user may change between runs (``scale``, ``pow``,
  ``minDiv`` of norms, ``coeff`` of costs, ``keep`` of dropout, ``coeffs`` of eltsum,
  ``topk`` of cost.logreg). Tunable values may also sit in the definition file; the
  layer-params file wins. The layer-params file is re-read on resume:
  ``load_layer_params`` updates an already resolved list in place.

This module owns the layer-file semantics; the engine owns what has memory (weight shapes,
initial weights, weightSource binding): see docs/DESIGN.md. ``load_layers`` returns a list
of plain dicts in topological order (see docs/layer-dicts.md
for every key). Each ``type=`` has one parser class registered in ``LAYER_PARSERS``;
adding a layer type means adding one class. Keys are matched case-insensitively (as
cuda-convnet's ConfigParser did), and a key a type does not know is an error, so a typo
never passes silently. Every error is a ``ConfigError`` naming the file, the [section]
and the key.

Derived sizes (cuda-convnet's formulas, computed by the engine's ConvGeometry.output_size
and PoolGeometry.output_size; rows and columns separately):
  conv/local:  modules = 1 + ceil((2*padding + imgSize - filterSize) / stride)
  pool:        outputs = ceil((imgSize - start - sizeX) / stride) + 1   (when outputsX=0)
  cmpool:      outputChannels = ceil((channels - start - size) / stride) + 1   (when 0)
  rnorm/cnorm: scale = file scale / size^2;   cmrnorm: scale = file scale / size
A conv or local layer's ``filters=`` counts the filters of one group, as in cuda-convnet: the
layer has filters*groups output maps, and the resolved dict's ``filters`` is that total.

Learning-rate schedules (epsW, epsB), progress p in [0, 1] (clamped):
  n or const[base]              base
  linear[base;tgtFactor]        base*(1-p) + (base/tgtFactor)*p, i.e. linear from base
                                to base/tgtFactor
  exp[base;tgtFactor]           base * tgtFactor^(-p)
  dexp[base;tgtFactor;numSteps] exp stepped in numSteps equal pieces of progress: step
                                k = 0..numSteps-1 (the first k with p <= (k+1)/numSteps)
                                has base * tgtFactor^(-k/(numSteps-1)); the last step
                                is base/tgtFactor
Parameters are separated by ';' (or ','), positionally or as name=value, e.g.
``dexp[base=0.01;tgtFactor=250;numSteps=4]``.
"""
import configparser
import difflib
import math
import numbers
import re
import sys
import zlib

import numpy as np

from . import _core
from .regular_file import NotARegularFile, read_regular_file

__all__ = [
    "ConfigError",
    "LAYER_PARSERS",
    "LayerParser",
    "register_layer_parser",
    "load_layers",
    "load_layer_params",
    "parse_schedule",
    "schedule_value",
    "learning_params",
    "set_learning_params",
]


class ConfigError(ValueError):
    """A layer file error; the message names the file, the [section] and the key."""

    def __init__(self, path, section, key, reason):
        self.path, self.section, self.key, self.reason = str(path), section, key, reason
        where = self.path
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key}"
        super().__init__(f"{where}: {reason}")


def warn(message):
    """One line on stderr: a file cuda-convnet accepted that is probably not what was meant."""
    print(f"convnet: warning: {message}", file=sys.stderr)


_REQUIRED = object()  # marks a key without default
_INT_RE = re.compile(r"[+-]?\d+")
INT32_MAX = 2 ** 31 - 1  # integers of a layer file are int32 in the engine
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _split_top_level(text, separators=","):
    """Splits on separators that are not inside [...] or (...)."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch in separators and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


def _parse_int(text):
    if not _INT_RE.fullmatch(text.strip()):
        raise ValueError(f"'{text}' is not an integer")
    return int(text)


def _parse_bool(text):
    if text.strip().lower() not in _BOOLS:
        raise ValueError(f"'{text}' is not a boolean (use 0 or 1)")
    return _BOOLS[text.strip().lower()]


def _parse_float(text):
    if not _FLOAT_RE.fullmatch(text.strip()):
        raise ValueError(f"'{text}' is not a number")
    return float(text)


# ---------------------------------------------------------------------------------------
# Learning-rate schedules
# ---------------------------------------------------------------------------------------

_SCHEDULE_PARAMS = {
    "const": ("base",),
    "linear": ("base", "tgtFactor"),
    "exp": ("base", "tgtFactor"),
    "dexp": ("base", "tgtFactor", "numSteps"),
    "jdexp": ("base", "tgtFactor", "numSteps"),
}
_SCHEDULE_RE = re.compile(r"(\w+)\s*\[(.*)\]", re.S)


def _schedule_values(text, kind, names):
    """{name: value} of a schedule's bracketed list: positional values in the order of names,
    or name=value items (after which no positional one), each name once and all present."""
    lower_names = {n.lower(): n for n in names}
    items = [item.strip() for item in re.split(r"[;,]", _SCHEDULE_RE.fullmatch(text).group(2))]
    if items == [""]:
        items = []
    values, named = {}, False
    for position, item in enumerate(items):
        if "=" in item:
            key, value = (part.strip() for part in item.split("=", 1))
            if key.lower() not in lower_names:
                raise ValueError(f"schedule {kind} has no parameter '{key}' (it takes {', '.join(names)})")
            name, named = lower_names[key.lower()], True
        else:
            if named:
                raise ValueError(f"schedule '{text}': positional value after named ones")
            if position >= len(names):
                raise ValueError(f"{kind}[...] takes {len(names)} values ({', '.join(names)}), got {len(items)}")
            name, value = names[position], item
        if name in values:
            raise ValueError(f"schedule '{text}' gives {name} twice")
        values[name] = _parse_int(value) if name == "numSteps" else _parse_float(value)
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"{kind}[...] takes {len(names)} values ({', '.join(names)}); missing {', '.join(missing)}")
    return values


def _check_schedule(values):
    if "base" in values and not (math.isfinite(values["base"]) and values["base"] >= 0):
        raise ValueError(f"schedule base must be >= 0, got {values['base']}")
    if "tgtFactor" in values and not (math.isfinite(values["tgtFactor"]) and values["tgtFactor"] > 0):
        raise ValueError(f"schedule tgtFactor must be > 0, got {values['tgtFactor']}")
    if "noiseStdev" in values and not (math.isfinite(values["noiseStdev"]) and values["noiseStdev"] >= 0):
        raise ValueError(f"noiseStdev must be >= 0, got {values['noiseStdev']}")
    if "numSteps" in values and values["numSteps"] < 2:
        raise ValueError(f"schedule numSteps must be >= 2, got {values['numSteps']}")


def parse_schedule(text):
    """Parses a schedule ("0.01", "exp[0.01;100]", "dexp[base=0.01;tgtFactor=250;numSteps=4]")
    into {"type", "base"[, "tgtFactor"[, "numSteps"]]}. Raises ValueError."""
    text = text.strip()
    if _FLOAT_RE.fullmatch(text):
        values = {"base": float(text)}
        kind = "const"
    else:
        match = _SCHEDULE_RE.fullmatch(text)
        if not match:
            raise ValueError(f"'{text}' is neither a number nor a schedule such as exp[base;tgtFactor]")
        kind = match.group(1).lower()
        if kind not in _SCHEDULE_PARAMS:
            raise ValueError(f"unknown schedule '{match.group(1)}' (expected const, linear, exp, dexp or jdexp)")
        values = _schedule_values(text, kind, _SCHEDULE_PARAMS[kind])
    _check_schedule(values)
    return {"type": kind, **values}


_SCHED_FACTOR_PARAMS = {"linear": ("tgtFactor", "noiseStdev"), "exp": ("tgtFactor", "noiseStdev"),
                        "dexp": ("tgtFactor", "noiseStdev", "numSteps"),
                        "jdexp": ("tgtFactor", "noiseStdev", "numSteps")}


def parse_rate_schedule(text, base):
    """The 2012 release's schedW / schedB ("default", "linear[tgtFactor,noiseStdev]",
    "exp[tgtFactor,noiseStdev]", "dexp[tgtFactor,noiseStdev,numSteps]", "jdexp[...]" as dexp;
    values positional or, as that release's parser wants them, name=value) applied to the base
    rate given by epsW / epsB: a schedule dict as parse_schedule returns, with noiseStdev."""
    text = text.strip()
    if text.lower() == "default":
        return {"type": "const", "base": base}
    match = _SCHEDULE_RE.fullmatch(text)
    kind = match.group(1).lower() if match else None
    if kind not in _SCHED_FACTOR_PARAMS:
        raise ValueError(f"'{text}' is not default, linear[tgtFactor,noiseStdev], exp[tgtFactor,noiseStdev], "
                         "dexp[tgtFactor,noiseStdev,numSteps] or jdexp[tgtFactor,noiseStdev,numSteps]")
    values = _schedule_values(text, kind, _SCHED_FACTOR_PARAMS[kind])
    _check_schedule(values)
    schedule = {"type": kind, "base": base, **values}
    if not schedule["noiseStdev"]:
        del schedule["noiseStdev"]
    return schedule


def schedule_value(schedule, progress, rng=None):
    """The value of a schedule dict at progress in [0, 1] (clamped); formulas in the module doc.
    A schedule with noiseStdev (the 2012 release's noisy rates) is multiplied by
    1 + |N(0, 1)| * noiseStdev, N drawn from rng (no noise without rng)."""
    value = _schedule_value(schedule, progress)
    if schedule.get("noiseStdev") and rng is not None:
        value *= 1.0 + abs(float(rng.standard_normal())) * float(schedule["noiseStdev"])
    return value


def _schedule_value(schedule, progress):
    if math.isnan(progress):
        raise ValueError("progress is NaN")
    p = min(max(float(progress), 0.0), 1.0)
    kind, base = schedule["type"], float(schedule["base"])
    if kind == "const":
        return base
    if kind not in _SCHEDULE_PARAMS:
        raise ValueError(f"unknown schedule type '{kind}'")
    target = float(schedule["tgtFactor"])
    if kind == "linear":
        return base * (1.0 - p) + (base / target) * p
    if kind == "exp":
        return base * target ** (-p)
    # dexp: step k (0-based) covers progress in (k / steps, (k + 1) / steps]; found in closed
    # form (numSteps may be 2^31), then nudged where rounding of p * steps puts it one off
    steps = int(schedule["numSteps"])
    k = min(max(math.ceil(p * steps) - 1, 0), steps - 1)
    while k > 0 and p <= k / steps:
        k -= 1
    while k < steps - 1 and p > (k + 1) / steps:
        k += 1

    def step_rate(j):
        return base / target if j == steps - 1 else base * target ** (-j / (steps - 1))

    # jdexp (the 2012 release's "jumpy" dexp): in the second half of a step's interval, for
    # progress in (0.2, 0.9), the geometric mean of this step's rate and the previous one's
    if kind == "jdexp" and k > 0 and 0.2 < p < 0.9 and p > (k + 0.5) / steps:
        return math.sqrt(step_rate(k) * step_rate(k - 1))
    return step_rate(k)


# ---------------------------------------------------------------------------------------
# Neurons (names as csrc/ops/neuron.h parses them)
# ---------------------------------------------------------------------------------------

_NEURON_PARAMS = {"ident": 0, "relu": 0, "logistic": 0, "tanh": 2, "abs": 0, "square": 0, "sqrt": 0,
                  "softrelu": 0, "brelu": 1, "linear": 2, "abstanh": 2}
_NEURON_RE = re.compile(r"(\w+)(?:\[(.*)\])?", re.S)


def _canonical_neuron(text):
    """Validates a neuron name ("relu", "tanh[1.7159,0.6666]") and returns it without spaces."""
    compact = re.sub(r"\s+", "", text)
    match = _NEURON_RE.fullmatch(compact)
    name = match.group(1) if match else None
    if name not in _NEURON_PARAMS:
        raise ValueError(f"unknown neuron '{text}' (expected ident, relu, logistic, tanh[a,b], abs, square, "
                         "sqrt, softrelu, brelu[a], linear[a,b] or abstanh[a,b])")
    if match.group(2) is None:
        return name
    args = match.group(2).split(",")
    if len(args) != _NEURON_PARAMS[name]:
        raise ValueError(f"neuron {name} takes {_NEURON_PARAMS[name]} parameter(s), got '{text}'")
    for arg in args:
        if not math.isfinite(_parse_float(arg)):
            raise ValueError(f"neuron parameter '{arg}' is not finite")
    return compact


# ---------------------------------------------------------------------------------------
# One INI section, with typed getters whose errors name file, section and key
# ---------------------------------------------------------------------------------------


class _Section:
    """The keys of one [section]; lookups are case-insensitive, errors name path/section/key."""

    def __init__(self, path, name, items):
        self.path, self.name = path, name
        self._items = {}  # lower-case key -> (key as written, value); the last one given wins
        for key, value in items:
            self._items[key.lower()] = (key, value)

    def error(self, key, reason):
        return ConfigError(self.path, self.name, key, reason)

    def keys(self):
        return [key for key, _ in self._items.values()]

    def has(self, key):
        return key.lower() in self._items

    def get_str(self, key, default=_REQUIRED):
        if key.lower() not in self._items:
            if default is _REQUIRED:
                raise self.error(key, "missing (required)")
            return default
        value = self._items[key.lower()][1].strip()
        if not value:
            raise self.error(key, "empty value")
        return value

    def _text(self, key, default):
        """The value's text; None when the key is absent and has a default."""
        return self.get_str(key, _REQUIRED if default is _REQUIRED else None)

    def convert(self, key, text, parse):
        """parse(text), its ValueError turned into a ConfigError naming this key."""
        try:
            return parse(text)
        except ValueError as err:
            raise self.error(key, str(err)) from None

    def _check_range(self, key, value, minimum, maximum):
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be <= {maximum}, got {value}")
        return value

    def get_int(self, key, default=_REQUIRED, minimum=None, maximum=INT32_MAX):
        """An integer; the engine stores them in 32 bits, so larger ones are refused here."""
        text = self._text(key, default)
        if text is None:
            return default
        return self._check_range(key, self.convert(key, text, _parse_int), minimum, maximum)

    def get_float(self, key, default=_REQUIRED, minimum=None, maximum=None):
        text = self._text(key, default)
        if text is None:
            return default
        return self._check_range(key, self.convert(key, text, _parse_float), minimum, maximum)

    def get_bool(self, key, default=_REQUIRED):
        text = self._text(key, default)
        if text is None:
            return default
        if text.lower() not in _BOOLS:
            raise self.error(key, f"'{text}' is not a boolean (use 0 or 1)")
        return _BOOLS[text.lower()]

    def get_choice(self, key, choices, default=_REQUIRED):
        text = self._text(key, default)
        if text is None:
            return default
        if text not in choices:
            raise self.error(key, f"'{text}' is not one of {', '.join(choices)}")
        return text

    def get_list(self, key, count, convert, default=_REQUIRED):
        """A comma list with one entry per input; a single entry is used for all."""
        text = self._text(key, default)
        if text is None:
            return [default] * count
        items = _split_top_level(text)
        if len(items) == 1:
            items = items * count
        if len(items) != count:
            expected = "1" if count == 1 else f"{count} (one per input) or 1"
            raise self.error(key, f"has {len(items)} entries; expected {expected}")
        return [self.convert(key, item, convert) for item in items]

    def get_float_list(self, key, count, default=_REQUIRED, minimum=None, maximum=None):
        values = self.get_list(key, count, _parse_float, default)
        for value in values:
            self._check_range(key, value, minimum, maximum)
        return values


_SECTION_RE = re.compile(r"\[([^\]]*)\]")
_KEY_RE = re.compile(r"([^\s#;=:\[][^=:]*?)\s*[=:]")
MAX_LAYER_FILE_BYTES = 16 << 20
_INDENTED_KEY_RE = re.compile(r"^[ \t]+([^\s=:#;\[][^=:]*?)\s*[=:]")


def _check_indented_keys(path, text):
    """An indented key line would silently continue the previous key's value (INI syntax)."""
    section = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        match = _INDENTED_KEY_RE.match(line)
        if match:
            raise ConfigError(path, section, match.group(1),
                              f"line {number} is indented; a key must start at the beginning of its line")


def _read_ini(path):
    """Reads an INI file into an ordered list of _Section; syntax errors become ConfigError.

    As Python 2's ConfigParser (which cuda-convnet used) did, a section given twice is one
    section with the keys of both (a key given in both takes the later value), and a key
    given twice takes its later value; each is said in a warning. Only a regular file of at
    most MAX_LAYER_FILE_BYTES is read; a UTF-8 byte-order mark is skipped."""
    parser = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#", ";"),
                                       inline_comment_prefixes=("#",), default_section="\0no default\0")
    parser.optionxform = str  # keep the user's spelling for messages
    try:
        text = read_regular_file(path, MAX_LAYER_FILE_BYTES).decode("utf-8-sig")
        _check_indented_keys(path, text)
        parser.read_string(text, source=str(path))
    except NotARegularFile as err:
        raise ConfigError(path, None, None, str(err).split(": ", 1)[-1]) from None
    except OSError as err:
        raise ConfigError(path, None, None, f"cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(path, None, None, f"not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except configparser.Error as err:
        raise ConfigError(path, None, None, str(err).replace("\n", " ")) from None
    seen, keys, current = {}, {}, None
    for lineno, line in enumerate(text.splitlines(), 1):
        match = _SECTION_RE.match(line)
        if match:
            current = match.group(1)
            if current in seen:
                warn(f"{path}: [{current}] given twice (lines {seen[current]} and {lineno}); merged, the later "
                     "value of a key winning, as cuda-convnet did")
            seen.setdefault(current, lineno)
            keys[current] = {}  # a key repeated in a repeated section is part of the merge above
            continue
        key = _KEY_RE.match(line)
        if current is not None and key:
            where = keys.setdefault(current, {})
            if key.group(1).lower() in where:
                warn(f"{path}: [{current}] {key.group(1)}: given twice (lines {where[key.group(1).lower()]} and "
                     f"{lineno}); the later value is used, as cuda-convnet did")
            where.setdefault(key.group(1).lower(), lineno)
    return [_Section(path, name, parser.items(name)) for name in parser.sections()]


# ---------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------


def _ceil_div(a, b):
    return -((-a) // b)


def _engine_size(sec, key, formula, *args):
    """formula(*args) from the engine (ConvGeometry/PoolGeometry.output_size), its errors
    naming this section and key."""
    try:
        return formula(*args)
    except (ValueError, TypeError) as err:
        raise sec.error(key, str(err)) from None


def _conv_output_size(sec, key, img_size, filter_size, padding, stride):
    """Modules along one axis."""
    return _engine_size(sec, key, _core.ConvGeometry.output_size, img_size, filter_size, padding, stride)


def _pool_output_size(sec, key, img_size, size, start, stride):
    """Pooling outputs along one axis."""
    return _engine_size(sec, key, _core.PoolGeometry.output_size, img_size, size, start, stride)


def _is_spatial(layer):
    return "outChannels" in layer


def _set_output(layer, channels=None, size_y=None, size_x=None, outputs=None):
    """Sets outputs, and the output geometry keys when the output is an image."""
    if channels is None:
        layer["outputs"] = outputs
    else:
        layer["outputs"] = channels * size_y * size_x
        layer["outChannels"], layer["outSizeY"], layer["outSizeX"] = channels, size_y, size_x


def _copy_output(layer, source):
    if _is_spatial(source):
        _set_output(layer, source["outChannels"], source["outSizeY"], source["outSizeX"])
    else:
        _set_output(layer, outputs=source["outputs"])


_FROM_SECTION = object()


def _input_image(sec, source, given=_FROM_SECTION):
    """(channels, imgSizeY, imgSizeX) of an input: its image geometry, checked against
    channels= when given; a flat input needs channels= and is read as square images.
    given: this input's channels= entry (None: not given), else read from sec."""
    if given is _FROM_SECTION:
        given = sec.get_int("channels", None, minimum=1)
    if _is_spatial(source):
        channels = source["outChannels"]
        if given is not None and given != channels:
            raise sec.error("channels", f"{given} does not match input '{source['name']}', "
                                        f"which has {channels} channels")
        return channels, source["outSizeY"], source["outSizeX"]
    if given is None:
        raise sec.error("channels", f"missing: input '{source['name']}' is flat ({source['outputs']} outputs), "
                                    "so channels= must say how to read it as square images")
    channels = given
    pixels, rest = divmod(source["outputs"], channels)
    side = math.isqrt(pixels)
    if rest or side * side != pixels or side == 0:
        raise sec.error("channels", f"input '{source['name']}' has {source['outputs']} outputs, "
                                    f"not {channels} channels of square images")
    return channels, side, side


_FUNC_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+\s*(\(([^()]*)\))?")


def _init_func(sec, key):
    """initWFunc/initBFunc: "module.function" or "module.function(arg,...)", kept as a string."""
    text = sec.get_str(key, None)
    if text is None:
        return None
    match = _FUNC_RE.fullmatch(text)
    args = match.group(3) if match else None
    if not match or (args and args.strip() and not all(a.strip() for a in args.split(","))):
        raise sec.error(key, f"'{text}' is not of the form module.function(arg1,arg2,...)")
    return text


_SOURCE_RE = re.compile(r"([A-Za-z0-9_.\-]+)\s*(?:\[\s*(\d+)\s*\])?")


def _weight_source(sec, text):
    """'layer' or 'layer[idx]' -> (layer, idx); None for an empty entry."""
    if not text:
        return None
    match = _SOURCE_RE.fullmatch(text)
    if not match:
        raise sec.error("weightSource", f"'{text}' is not of the form layer or layer[index]")
    return match.group(1), int(match.group(2) or 0)


# ---------------------------------------------------------------------------------------
# Layer parsers
# ---------------------------------------------------------------------------------------

LAYER_PARSERS = {}


def register_layer_parser(cls):
    """Class decorator: registers a LayerParser subclass under its type_name."""
    if cls.type_name in LAYER_PARSERS:
        raise ValueError(f"layer type '{cls.type_name}' registered twice")
    LAYER_PARSERS[cls.type_name] = cls
    return cls


# wball: max-norm of each filter (weight column), in units of its weight count (the 2012
# release); schedW/schedB: the 2012 release's schedules of epsW/epsB; superEps/superMom: its
# experimental update (only 0, its default, is accepted); updatePeriod: cuda-convnet2's
# minibatches per update (0 and 1: every minibatch; k > 1: the gradients of k minibatches
# are averaged into one update, which the trainer does).
_WEIGHT_LEARNING_KEYS = frozenset({"epsW", "epsB", "momW", "momB", "wc", "wball", "schedW", "schedB",
                                   "superEps", "superMom", "updatePeriod", "sched", "wcnorm"})
# Keys some of the 2012 release's params files set but its parser never read: accepted and
# ignored as there, with a warning when set to something (key -> what does the job here).
_UNREAD_2012_KEYS = {"sched": "schedW / schedB", "wcnorm": "wcNormMin / wcNormMax"}


class _ParamSource:
    """Where a layer's learning/tunable values come from: its layer-params section, then
    (tunables only) its definition section. On resume, an absent tunable keeps its value."""

    def __init__(self, params_path, layer_name, params_sec, def_sec, resuming):
        self.params_path, self.layer_name = params_path, layer_name
        self.params_sec, self.def_sec, self.resuming = params_sec, def_sec, resuming

    def learning(self, key, getter, *args, default=_REQUIRED, **kwargs):
        """A value only the layer-params file gives."""
        sec = self.params_sec
        if sec is None or not sec.has(key):
            if default is not _REQUIRED:
                return default
            where = "missing" if sec is not None else "missing (the layer-params file has no section for this layer)"
            raise ConfigError(self.params_path, self.layer_name, key,
                              f"{where}; layers with weights need epsW, epsB, momW and momB")
        return getter(sec, key, *args, **kwargs)

    def warn_unread(self, key, why):
        """One warning line: a key the 2012 release's parser never read is ignored here too."""
        warn(f"{self.params_path}: [{self.layer_name}] {key}: ignored, as by the 2012 release's parser ({why})")

    def tunable(self, key, getter, *args, default=_REQUIRED, **kwargs):
        """A value either file may give (layer-params first); None: keep the current one."""
        for sec in (self.params_sec, self.def_sec):
            if sec is not None and sec.has(key):
                return getter(sec, key, *args, **kwargs)
        if self.resuming:
            return None
        if default is not _REQUIRED:
            return default
        raise ConfigError(self.params_path, self.layer_name, key,
                          "missing (required; give it in the layer-params file or the layer definition)")


class LayerParser:
    """Base of the per-type parsers. A subclass sets type_name and its keys and implements
    resolve(); layers with learned or tunable values implement apply_params() too."""

    type_name = ""
    keys = frozenset()            # type-specific keys of the layer definition file
    tunable_keys = frozenset()    # keys either file may give (the layer-params file wins)
    learning_keys = frozenset()   # keys only the layer-params file may give
    min_inputs, max_inputs = 1, 1  # max_inputs None: any number
    takes_neuron = True           # whether neuron= shorthand is allowed
    class_tree = None             # the data provider's class tree (set by load_layers)

    def definition_keys(self):
        common = {"type", "gpu"} | ({"inputs"} if self.max_inputs != 0 else set())
        common |= {"neuron"} if self.takes_neuron else set()
        return common | set(self.keys) | set(self.tunable_keys)

    def resolve(self, sec, layer, inputs, data_dims):
        """Reads the type's keys from sec and fills layer (inputs: the input layer dicts)."""
        raise NotImplementedError(f"layer type {self.type_name} has no resolve()")

    def apply_params(self, source, layer, layers_by_name):
        """Sets the learning/tunable values from a _ParamSource (default: the type has none)."""


@register_layer_parser
class DataLayerParser(LayerParser):
    type_name = "data"
    keys = frozenset({"dataIdx"})
    min_inputs = max_inputs = 0

    def resolve(self, sec, layer, inputs, data_dims):
        index = sec.get_int("dataIdx", minimum=0)
        if index not in data_dims:
            raise sec.error("dataIdx", f"{index} is not provided by the data provider "
                                       f"(it provides {sorted(data_dims)})")
        layer["dataIdx"] = index
        dims = data_dims[index]
        if isinstance(dims, int):
            _set_output(layer, outputs=dims)
        else:
            _set_output(layer, *dims)


class _WeightLayerParser(LayerParser):
    """Shared parts of conv, local and fc: init keys, weightSource, learning parameters."""

    learning_keys = _WEIGHT_LEARNING_KEYS

    def resolve_init(self, sec, layer, count):
        if self.type_name != "fc" and count == 1:
            layer["initW"] = sec.get_float("initW", 0.01, minimum=0.0)
        else:
            layer["initW"] = sec.get_float_list("initW", count, 0.01, minimum=0.0)
        layer["initB"] = sec.get_float("initB", 0.0)
        for key in ("initWFunc", "initBFunc"):
            func = _init_func(sec, key)
            if func is not None:
                layer[key] = func
        text = sec.get_str("weightSource", None)
        if text is not None:
            entries = [e.strip() for e in text.split(",")]
            if len(entries) != count:
                raise sec.error("weightSource", f"has {len(entries)} entries; expected {count} (one per input, "
                                                "empty for an unshared matrix)")
            sources = [_weight_source(sec, entry) for entry in entries]
            if any(sources):
                # "layer" or "layer[index]" per matrix, "" for its own; the engine binds them
                names = ["" if src is None else src[0] if src[1] == 0 else f"{src[0]}[{src[1]}]"
                         for src in sources]
                layer["weightSource"] = names if self.type_name == "fc" or count > 1 else names[0]

    def apply_params(self, source, layer, layers_by_name):
        count = len(layer["inputs"])  # one weight matrix per input

        def schedules(sec, key):
            return sec.get_list(key, count, parse_schedule)

        def schedule(sec, key):
            return sec.convert(key, sec.get_str(key), parse_schedule)

        layer["epsW"] = source.learning("epsW", schedules)
        layer["epsB"] = source.learning("epsB", schedule)
        for rate_key, sched_key in (("epsW", "schedW"), ("epsB", "schedB")):
            text = source.learning(sched_key, _Section.get_str, default=None)
            if text is None:
                continue
            rates = layer[rate_key] if rate_key == "epsW" else [layer[rate_key]]
            if any(rate["type"] != "const" for rate in rates):
                raise source.params_sec.error(sched_key, f"{rate_key} is already a schedule; give one or the other")
            scheduled = [source.params_sec.convert(sched_key, text, lambda t, b=rate["base"]: parse_rate_schedule(t, b))
                         for rate in rates]
            layer[rate_key] = scheduled if rate_key == "epsW" else scheduled[0]
        layer["momW"] = source.learning("momW", _Section.get_float_list, count, minimum=0.0, maximum=1.0)
        layer["momB"] = source.learning("momB", _Section.get_float, minimum=0.0, maximum=1.0)
        layer["wc"] = source.learning("wc", _Section.get_float_list, count, default=[0.0] * count, minimum=0.0)
        wball = source.learning("wball", _Section.get_float_list, count, default=[0.0] * count, minimum=0.0)
        if any(wball):
            layer["wball"] = wball
        for key in ("superEps", "superMom"):
            source.learning(key, _Section.get_float, default=0.0, minimum=0.0, maximum=0.0)
        for key, instead in _UNREAD_2012_KEYS.items():
            text = source.learning(key, _Section.get_str, default="0")
            if text.strip().lower() not in ("", "0", "0.0", "0.00", "default"):
                source.warn_unread(key, f"{instead} do this")
        period = source.learning("updatePeriod", _Section.get_int, default=0, minimum=0)
        if period > 1:
            if any(layer.get("weightSource") or []) if isinstance(layer.get("weightSource"), list) \
                    else layer.get("weightSource"):
                raise source.params_sec.error("updatePeriod", "is not supported on a layer that shares weights")
            layer["updatePeriod"] = period
        else:
            layer.pop("updatePeriod", None)
        self.apply_constraints(source, layer, count)

    def apply_constraints(self, source, layer, count):
        """Type-specific weight constraints of the layer-params file (default: none)."""


def _sparse_connectivity(sec, layer_name, index, groups, channels, filter_channels, at):
    """cuda-convnet's randSparse: groups * filterChannels channel indices, group g seeing the
    slice [g*filterChannels, (g+1)*filterChannels). Made of groups*filterChannels/channels
    permutations of all channels, drawn from a generator seeded by the layer's name and the
    input index (so a layer file always gives the same net), or returned by initCFunc
    (module.function(name, index, (groups, channels, filterChannels), params=[...])). The
    resolved list is stored with the net, so a checkpoint keeps it."""
    if groups < 2:
        raise sec.error("randSparse", f"needs groups > 1, got {groups}{at}")
    if channels % filter_channels or (groups * filter_channels) % channels:
        raise sec.error("filterChannels", f"{filter_channels} must divide channels ({channels}) and "
                                          f"groups*filterChannels ({groups * filter_channels}) must be a multiple "
                                          f"of channels{at}")
    over_sample = groups * filter_channels // channels
    spec = sec.get_str("initCFunc", None)
    if spec is None:
        rng = np.random.default_rng(zlib.crc32(f"{layer_name}/{index}".encode()))
        return [int(c) for _ in range(over_sample) for c in rng.permutation(channels)]
    from .weights import call_user_function
    try:
        conns = call_user_function(spec, layer_name, index, (groups, channels, filter_channels))
        conns = [int(c) for c in conns]
    except (ValueError, TypeError) as err:
        raise sec.error("initCFunc", str(err)) from None
    if len(conns) != over_sample * channels:
        raise sec.error("initCFunc", f"returned {len(conns)} channels; expected groups*filterChannels = "
                                     f"{over_sample * channels}{at}")
    for k in range(over_sample):
        if sorted(conns[k * channels:(k + 1) * channels]) != list(range(channels)):
            raise sec.error("initCFunc", f"entries {k * channels}..{(k + 1) * channels - 1} are not a permutation "
                                         f"of 0..{channels - 1}{at}")
    return conns


@register_layer_parser
class ConvLayerParser(_WeightLayerParser):
    """conv and local. partialSum (cuda-convnet) and sumWidth (cuda-convnet2) only chose how
    the originals' kernels split the weight-gradient sum over modules: accepted and unused,
    as the result does not depend on them. randSparse=0 is accepted (dense connectivity)."""

    type_name = "conv"
    max_inputs = None
    keys = frozenset({"channels", "filters", "filterSize", "padding", "stride", "groups", "sharedBiases",
                      "partialSum", "sumWidth", "initW", "initB", "initWFunc", "initBFunc", "weightSource",
                      "randSparse", "filterChannels", "initCFunc"})
    learning_keys = _WEIGHT_LEARNING_KEYS | {"wcNormMin", "wcNormMax"}
    local = False

    def apply_constraints(self, source, layer, count):
        # cuda-convnet2: after each update, each filter's standard deviation (around its mean)
        # is clamped into [wcNormMin, wcNormMax] when wcNormMax > 0.
        norm_max = source.learning("wcNormMax", _Section.get_float_list, count, default=[0.0] * count, minimum=0.0)
        norm_min = source.learning("wcNormMin", _Section.get_float_list, count, default=[0.0] * count, minimum=0.0)
        if any(norm_max):
            layer["wcNormMax"], layer["wcNormMin"] = norm_max, norm_min

    def resolve(self, sec, layer, inputs, data_dims):
        n = len(inputs)

        def ints(key, default=_REQUIRED, minimum=None):
            values = sec.get_list(key, n, _parse_int, default)
            for value in values:
                if value is not None:
                    sec._check_range(key, value, minimum, INT32_MAX)
            return values

        given_channels = ints("channels", None, minimum=1)
        images = [_input_image(sec, source, given) for source, given in zip(inputs, given_channels)]
        filters, filter_size = ints("filters", minimum=1), ints("filterSize", minimum=1)
        padding, stride, groups = ints("padding", 0, minimum=0), ints("stride", 1, minimum=1), ints("groups", 1, minimum=1)
        sparse = sec.get_list("randSparse", n, _parse_bool, False)
        if sec.has("initCFunc") and not any(sparse):
            raise sec.error("initCFunc", "only applies with randSparse=1")
        given_filter_channels = ints("filterChannels", None, minimum=1)
        per_input, totals, conns = [], set(), []
        for i, (channels, size_y, size_x) in enumerate(images):
            at = f" (input {i}, '{inputs[i]['name']}')" if n > 1 else ""
            filter_channels = given_filter_channels[i]
            if sparse[i]:
                filter_channels = filter_channels or channels // groups[i]
                conns.append(_sparse_connectivity(sec, layer["name"], i, groups[i], channels, filter_channels, at))
            else:
                conns.append(None)
                if channels % groups[i]:
                    raise sec.error("groups", f"{groups[i]} does not divide the input's {channels} channels{at}")
                if filter_channels is not None and filter_channels * groups[i] != channels:
                    raise sec.error("filterChannels", f"{filter_channels} is not channels/groups = "
                                                      f"{channels}/{groups[i]}{at}; other values need randSparse=1")
                filter_channels = channels // groups[i]
            if padding[i] >= filter_size[i]:
                raise sec.error("padding", f"{padding[i]} must be smaller than filterSize={filter_size[i]} "
                                           f"(the first module would see only padding){at}")
            if filter_size[i] > min(size_y, size_x) + 2 * padding[i]:
                raise sec.error("filterSize", f"{filter_size[i]} is larger than the padded image "
                                              f"({size_y}x{size_x} with padding {padding[i]}){at}")
            modules = (_conv_output_size(sec, "filterSize", size_y, filter_size[i], padding[i], stride[i]),
                       _conv_output_size(sec, "filterSize", size_x, filter_size[i], padding[i], stride[i]))
            totals.add(filters[i] * groups[i])  # as in cuda-convnet, filters= counts one group's filters
            per_input.append(dict(channels=channels, imgSizeY=size_y, imgSizeX=size_x, filterSize=filter_size[i],
                                  padding=padding[i], stride=stride[i], groups=groups[i],
                                  filterChannels=filter_channels, modules=modules))
        if max(totals) > INT32_MAX:
            raise sec.error("filters", f"filters*groups = {max(totals)} is more than {INT32_MAX}")
        if len(totals) > 1:
            raise sec.error("filters", f"filters*groups differ between the inputs ({sorted(totals)}); the inputs' "
                                       "results are summed, so they must have the same number of filters")
        if len({p["modules"] for p in per_input}) > 1:
            described = ", ".join(f"{inp['name']}: {p['modules'][0]}x{p['modules'][1]}" for inp, p in zip(inputs, per_input))
            raise sec.error("inputs", f"the inputs give different output sizes ({described}); the inputs' results "
                                      "are summed, so their filterSize/padding/stride must give the same size")
        modules_y, modules_x = per_input[0]["modules"]
        for key in ("channels", "imgSizeY", "imgSizeX", "filterSize", "padding", "stride", "groups", "filterChannels"):
            values = [p[key] for p in per_input]
            layer[key] = values[0] if n == 1 else values
        total = totals.pop()
        layer.update(filters=total, modulesY=modules_y, modulesX=modules_x)
        if any(c is not None for c in conns):
            layer["filterConns"] = conns  # per input: the channels each group sees (None: dense)
        if not self.local:
            layer["sharedBiases"] = sec.get_bool("sharedBiases", True)
        layer["partialSum"] = sec.get_int("partialSum", 0, minimum=0)
        self.resolve_init(sec, layer, n)
        _set_output(layer, total, modules_y, modules_x)


@register_layer_parser
class LocalLayerParser(ConvLayerParser):
    type_name = "local"
    keys = ConvLayerParser.keys - {"sharedBiases", "sumWidth"}
    learning_keys = _WEIGHT_LEARNING_KEYS
    local = True

    def apply_constraints(self, source, layer, count):
        pass


@register_layer_parser
class FcLayerParser(_WeightLayerParser):
    type_name = "fc"
    keys = frozenset({"outputs", "initW", "initB", "initWFunc", "initBFunc", "weightSource"})
    max_inputs = None

    def resolve(self, sec, layer, inputs, data_dims):
        _set_output(layer, outputs=sec.get_int("outputs", minimum=1))
        self.resolve_init(sec, layer, len(inputs))


@register_layer_parser
class TreeFcLayerParser(_WeightLayerParser):
    """The 2012 release's treefc: an fc layer over the classes of the data provider's class
    tree, with a weight column per tree node (a class's weights sum its path from the root)."""
    type_name = "treefc"
    keys = frozenset({"outputs", "initW", "initB", "initWFunc", "initBFunc"})

    def resolve(self, sec, layer, inputs, data_dims):
        parents = self.class_tree
        if parents is None:
            raise sec.error("type", "treefc needs a class tree from the data provider (batches.meta 'tree' "
                                    "with all_wnids['gproot'], or dummy-lr-N); this provider has none")
        classes = len(parents) - len({p for p in parents if p >= 0})  # leaves: the classes
        outputs = sec.get_int("outputs", classes, minimum=1)
        if outputs != classes:
            raise sec.error("outputs", f"is {outputs}, but the class tree has {classes} classes")
        _set_output(layer, outputs=classes)
        layer["treeParents"] = list(parents)
        self.resolve_init(sec, layer, 1)

    def apply_constraints(self, source, layer, count):
        if layer.pop("wball", None):  # as the 2012 code, which constrains no treefc weights
            warn(f"{source.params_path}: [{source.layer_name}] wball: ignored on a treefc layer")


@register_layer_parser
class PoolLayerParser(LayerParser):
    type_name = "pool"
    keys = frozenset({"pool", "channels", "sizeX", "start", "stride", "outputsX", "outputsY", "sum"})

    def resolve(self, sec, layer, inputs, data_dims):
        channels, size_y, size_x = _input_image(sec, inputs[0])
        pool = sec.get_choice("pool", ("max", "avg", "maxabs"))
        if sec.has("sum"):  # cuda-convnet2: avg pooling that sums instead of averaging
            if pool != "avg":
                raise sec.error("sum", f"applies to pool=avg only, not pool={pool}")
            if sec.get_bool("sum"):
                layer["sum"] = True
        size = sec.get_int("sizeX", minimum=1, maximum=min(size_y, size_x))
        stride = sec.get_int("stride", minimum=1)
        start = sec.get_int("start", 0, minimum=1 - size, maximum=min(size_y, size_x) - size)
        outputs_x = sec.get_int("outputsX", 0, minimum=0)
        # cuda-convnet's images are square: outputsX alone sets both sizes of a square image
        y_key = "outputsY" if sec.has("outputsY") or size_y != size_x else "outputsX"
        outputs_y = sec.get_int(y_key, 0, minimum=0)
        outputs_y = outputs_y or _pool_output_size(sec, y_key, size_y, size, start, stride)
        outputs_x = outputs_x or _pool_output_size(sec, "outputsX", size_x, size, start, stride)
        for key, count, img in ((y_key, outputs_y, size_y), ("outputsX", outputs_x, size_x)):
            if start + (count - 1) * stride >= img:
                raise sec.error(key, f"{count} outputs with start {start} and stride {stride} "
                                     f"run past the image ({img} pixels)")
        layer.update(pool=pool, channels=channels, imgSizeY=size_y, imgSizeX=size_x, sizeX=size,
                     start=start, stride=stride, outputsY=outputs_y, outputsX=outputs_x)
        _set_output(layer, channels, outputs_y, outputs_x)


@register_layer_parser
class CrossMapPoolLayerParser(LayerParser):
    type_name = "cmpool"
    # cuda-convnet2 spells the output channel count "outputs"; outputChannels is accepted too.
    keys = frozenset({"pool", "channels", "size", "start", "stride", "outputChannels", "outputs"})

    def resolve(self, sec, layer, inputs, data_dims):
        channels, size_y, size_x = _input_image(sec, inputs[0])
        sec.get_choice("pool", ("max",), "max")
        size = sec.get_int("size", minimum=1, maximum=channels)
        stride = sec.get_int("stride", minimum=1)
        start = sec.get_int("start", 0, minimum=1 - size, maximum=0)
        if sec.has("outputs") and sec.has("outputChannels"):
            raise sec.error("outputs", "give either outputs or outputChannels, not both")
        key = "outputs" if sec.has("outputs") else "outputChannels"
        out_channels = sec.get_int(key, 0, minimum=0) or _pool_output_size(sec, key, channels, size, start, stride)
        covered = start + (out_channels - 1) * stride + size
        if covered < channels:
            raise sec.error(key, f"{out_channels} outputs cover only {covered} of {channels} channels")
        if start + (out_channels - 1) * stride >= channels:
            raise sec.error(key, f"{out_channels} outputs run past the {channels} channels")
        layer.update(channels=channels, imgSizeY=size_y, imgSizeX=size_x, size=size, start=start,
                     stride=stride, outputChannels=out_channels)
        _set_output(layer, out_channels, size_y, size_x)


def _positive_float(sec, key, maximum=None):
    value = sec.get_float(key, maximum=maximum)
    if value <= 0:
        raise sec.error(key, f"must be > 0, got {value}")
    return value


class _NormLayerParser(LayerParser):
    keys = frozenset({"channels", "size"})
    tunable_keys = frozenset({"scale", "pow", "minDiv"})
    cross_map = False

    def resolve(self, sec, layer, inputs, data_dims):
        channels, size_y, size_x = _input_image(sec, inputs[0])
        limit = channels if self.cross_map else min(size_y, size_x)
        layer.update(channels=channels, imgSizeY=size_y, imgSizeX=size_x,
                     size=sec.get_int("size", minimum=1, maximum=limit))
        if self.cross_map:
            layer["blocked"] = sec.get_bool("blocked", False)
        _set_output(layer, channels, size_y, size_x)

    def apply_params(self, source, layer, layers_by_name):
        scale = source.tunable("scale", _Section.get_float, minimum=0.0)
        if scale is not None:
            layer["scale"] = scale / (layer["size"] if self.cross_map else layer["size"] ** 2)
        power = source.tunable("pow", _Section.get_float)
        if power is not None:
            layer["pow"] = power
        min_div = source.tunable("minDiv", _positive_float, default=1.0)
        if min_div is not None:
            layer["minDiv"] = min_div


@register_layer_parser
class ResponseNormLayerParser(_NormLayerParser):
    type_name = "rnorm"


@register_layer_parser
class ContrastNormLayerParser(_NormLayerParser):
    type_name = "cnorm"


@register_layer_parser
class CrossMapResponseNormLayerParser(_NormLayerParser):
    type_name = "cmrnorm"
    keys = _NormLayerParser.keys | {"blocked"}
    cross_map = True


@register_layer_parser
class NeuronLayerParser(LayerParser):
    type_name = "neuron"
    keys = frozenset({"neuron"})
    takes_neuron = False

    def resolve(self, sec, layer, inputs, data_dims):
        layer["neuron"] = sec.convert("neuron", sec.get_str("neuron"), _canonical_neuron)
        _copy_output(layer, inputs[0])


@register_layer_parser
class SoftmaxLayerParser(LayerParser):
    type_name = "softmax"

    def resolve(self, sec, layer, inputs, data_dims):
        _set_output(layer, outputs=inputs[0]["outputs"])


class _EltwiseLayerParser(LayerParser):
    max_inputs = None

    def resolve(self, sec, layer, inputs, data_dims):
        sizes = [inp["outputs"] for inp in inputs]
        if len(set(sizes)) != 1:
            described = ", ".join(f"{inp['name']}: {inp['outputs']}" for inp in inputs)
            raise sec.error("inputs", f"inputs must have the same number of outputs ({described})")
        geometries = {(inp.get("outChannels"), inp.get("outSizeY"), inp.get("outSizeX")) for inp in inputs}
        if len(geometries) == 1 and _is_spatial(inputs[0]):
            _copy_output(layer, inputs[0])
        else:
            _set_output(layer, outputs=sizes[0])


@register_layer_parser
class EltwiseSumLayerParser(_EltwiseLayerParser):
    type_name = "eltsum"
    tunable_keys = frozenset({"coeffs"})

    def apply_params(self, source, layer, layers_by_name):
        count = len(layer["inputs"])

        def coefficients(sec, key):
            items = _split_top_level(sec.get_str(key))
            if len(items) != count:
                raise sec.error(key, f"has {len(items)} entries; expected {count} (one per input)")
            return [sec.convert(key, item, _parse_float) for item in items]

        coeffs = source.tunable("coeffs", coefficients, default=[1.0] * count)
        if coeffs is not None:
            layer["coeffs"] = coeffs


@register_layer_parser
class EltwiseMaxLayerParser(_EltwiseLayerParser):
    type_name = "eltmax"
    min_inputs = 2


@register_layer_parser
class ConcatLayerParser(LayerParser):
    type_name = "concat"
    max_inputs = None

    def resolve(self, sec, layer, inputs, data_dims):
        _set_output(layer, outputs=sum(inp["outputs"] for inp in inputs))


@register_layer_parser
class PassLayerParser(ConcatLayerParser):
    """pass (cuda-convnet2's pass-through): its inputs' rows stacked, as concat; inputs that
    are images of one size give an image with their channels stacked."""

    type_name = "pass"

    def resolve(self, sec, layer, inputs, data_dims):
        sizes = {(inp.get("outSizeY"), inp.get("outSizeX")) for inp in inputs}
        if all(_is_spatial(inp) for inp in inputs) and len(sizes) == 1:
            size_y, size_x = sizes.pop()
            _set_output(layer, sum(inp["outChannels"] for inp in inputs), size_y, size_x)
        else:
            super().resolve(sec, layer, inputs, data_dims)


class _ImageLayerParser(LayerParser):
    """Layers of the 2012 release on images, without weights (csrc/layers/image_layers.cpp)."""

    keys = frozenset({"channels"})

    def resolve(self, sec, layer, inputs, data_dims):
        channels, size_y, size_x = _input_image(sec, inputs[0])
        layer.update(channels=channels, imgSizeY=size_y, imgSizeX=size_x)
        self.resolve_image(sec, layer, channels, size_y, size_x)

    def resolve_image(self, sec, layer, channels, size_y, size_x):
        _set_output(layer, channels, size_y, size_x)


@register_layer_parser
class ReflectLayerParser(_ImageLayerParser):
    """href: each image mirrored left-right (the 2012 release took 1 to 3 channels)."""

    type_name = "href"


@register_layer_parser
class BlurLayerParser(_ImageLayerParser):
    """blur: separable Gaussian blur; taps exp(-(filterSize//2 - i)^2 / (2 stdev^2)),
    i = 0..filterSize-1, normalised to sum 1 (the 2012 release's); zeros outside the image."""

    type_name = "blur"
    keys = frozenset({"channels", "filterSize", "stdev"})

    def resolve_image(self, sec, layer, channels, size_y, size_x):
        size = sec.get_int("filterSize")
        if size not in (3, 5, 7, 9):
            raise sec.error("filterSize", f"must be 3, 5, 7 or 9, got {size}")
        if size > min(size_y, size_x):
            raise sec.error("filterSize", f"{size} is larger than the image ({size_y}x{size_x})")
        stdev = _positive_float(sec, "stdev")
        taps = [math.exp(-((size // 2 - i) ** 2) / (2 * stdev ** 2)) for i in range(size)]
        layer.update(filterSize=size, stdev=stdev, filter=[t / sum(taps) for t in taps])
        _set_output(layer, channels, size_y, size_x)


@register_layer_parser
class NailbedLayerParser(_ImageLayerParser):
    """nailbed: every stride-th pixel, ceil(imgSize/stride) per axis, centred as the 2012
    release placed them (start = (imgSize - stride*(outputs-1)) // 2)."""

    type_name = "nailbed"
    keys = frozenset({"channels", "stride"})

    def resolve_image(self, sec, layer, channels, size_y, size_x):
        stride = sec.get_int("stride", minimum=1)
        outputs_y, outputs_x = _ceil_div(size_y, stride), _ceil_div(size_x, stride)
        starts = {(size_y - stride * (outputs_y - 1)) // 2, (size_x - stride * (outputs_x - 1)) // 2}
        if len(starts) > 1:
            raise sec.error("stride", f"the {size_y}x{size_x} image gives different starts per axis; "
                                      "nailbed needs square images")
        layer.update(stride=stride, start=starts.pop(), outputsY=outputs_y, outputsX=outputs_x)
        _set_output(layer, channels, outputs_y, outputs_x)


@register_layer_parser
class DropoutLayerParser(LayerParser):
    """dropout: inverted (kept units scaled by 1/keep in training, identity at test time);
    enable=0 (cuda-convnet2) makes the layer the identity in training too."""

    type_name = "dropout"
    tunable_keys = frozenset({"keep", "enable"})

    def resolve(self, sec, layer, inputs, data_dims):
        _copy_output(layer, inputs[0])

    def apply_params(self, source, layer, layers_by_name):
        keep = source.tunable("keep", _positive_float, maximum=1.0, default=0.5)
        if keep is not None:
            layer["keep"] = keep
        enable = source.tunable("enable", _Section.get_bool, default=True)
        if enable is not None:
            layer["enable"] = enable


@register_layer_parser
class Dropout2LayerParser(DropoutLayerParser):
    """dropout2 (cuda-convnet2): kept units pass unscaled in training, and at test time
    every unit is multiplied by keep."""

    type_name = "dropout2"


@register_layer_parser
class HiddenSexLayerParser(Dropout2LayerParser):
    """hs (the 2012 release): dropout2 by its first name; keep is required there."""

    type_name = "hs"

    def apply_params(self, source, layer, layers_by_name):
        if "keep" not in layer:
            layer["keep"] = source.tunable("keep", _positive_float, maximum=1.0)
        super().apply_params(source, layer, layers_by_name)


class _CostLayerParser(LayerParser):
    """Costs: consumed by nobody, no neuron, coeff (default 1) from either file."""

    tunable_keys = frozenset({"coeff"})
    takes_neuron = False

    def resolve(self, sec, layer, inputs, data_dims):
        self.check_inputs(sec, inputs)
        layer["outputs"] = 0  # a cost produces no activations for other layers (as in cuda-convnet)

    def check_inputs(self, sec, inputs):
        """Type-specific checks of the inputs (default: none)."""

    def apply_params(self, source, layer, layers_by_name):
        coeff = source.tunable("coeff", _Section.get_float, default=1.0)
        if coeff is not None:
            layer["coeff"] = coeff


def _check_probs(sec, probs):
    if probs["type"] != "softmax":
        raise sec.error("inputs", f"second input '{probs['name']}' must be a softmax layer, "
                                  f"not {probs['type']}")


@register_layer_parser
class LogregCostParser(_CostLayerParser):
    type_name = "cost.logreg"
    tunable_keys = frozenset({"coeff", "topk"})
    min_inputs = max_inputs = 2

    def check_inputs(self, sec, inputs):
        labels, probs = inputs
        if labels["outputs"] != 1:
            raise sec.error("inputs", f"first input '{labels['name']}' must be the labels (1 output), "
                                      f"it has {labels['outputs']}")
        _check_probs(sec, probs)

    def apply_params(self, source, layer, layers_by_name):
        super().apply_params(source, layer, layers_by_name)
        classes = layers_by_name[layer["inputs"][1]]["outputs"]
        topk = source.tunable("topk", _Section.get_int, default=1, minimum=1, maximum=classes)
        if topk is not None:
            layer["topk"] = topk


@register_layer_parser
class SumOfSquaresCostParser(_CostLayerParser):
    type_name = "cost.sum2"


@register_layer_parser
class CrossEntropyCostParser(_CostLayerParser):
    type_name = "cost.crossent"
    min_inputs = max_inputs = 2

    def check_inputs(self, sec, inputs):
        labels, probs = inputs
        _check_probs(sec, probs)
        if labels["outputs"] != probs["outputs"]:
            raise sec.error("inputs", f"labels '{labels['name']}' have {labels['outputs']} rows but "
                                      f"'{probs['name']}' has {probs['outputs']} classes")


class _ElementCostParser(_CostLayerParser):
    """The 2012 release's element-wise costs: inputs = [labels, outputs] with the same rows
    (one target per output, e.g. multi-label data against logistic outputs)."""

    min_inputs = max_inputs = 2
    # topk: the 2012 release's flickr params files give it; they count no errors, and its
    # parser never read it: accepted and ignored (a warning when it is not 1)
    tunable_keys = frozenset({"coeff", "topk"})

    def apply_params(self, source, layer, layers_by_name):
        super().apply_params(source, layer, layers_by_name)
        topk = source.tunable("topk", _Section.get_int, default=1, minimum=1)
        if topk not in (None, 1):
            source.warn_unread("topk", f"{self.type_name} counts no errors")

    def check_inputs(self, sec, inputs):
        labels, outputs = inputs
        if labels["outputs"] != outputs["outputs"]:
            raise sec.error("inputs", f"labels '{labels['name']}' have {labels['outputs']} rows but "
                                      f"'{outputs['name']}' has {outputs['outputs']} outputs")


@register_layer_parser
class BinaryCrossEntropyCostParser(_ElementCostParser):
    """cost.crossent2: -(t log y + (1-t) log(1-y)) summed over elements."""

    type_name = "cost.crossent2"


@register_layer_parser
class RobustFlickrCostParser(_ElementCostParser):
    """cost.rflickr: log(1 + (y-t)^2) summed over elements."""

    type_name = "cost.rflickr"


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def _check_data_dims(data_dims):
    """data_dims with plain ints: {index: rows} or {index: (channels, imgSizeY, imgSizeX)}."""
    def positive(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0

    checked = {}
    for index, dims in data_dims.items():
        flat = positive(dims)
        image = isinstance(dims, (tuple, list)) and len(dims) == 3 and all(positive(d) for d in dims)
        if not isinstance(index, numbers.Integral) or not (flat or image):
            raise ValueError(f"data_dims[{index!r}] = {dims!r}: expected (channels, imgSizeY, imgSizeX) "
                             "or a positive int")
        checked[int(index)] = int(dims) if flat else tuple(int(d) for d in dims)
    return checked


def _check_keys(sec, allowed, other_file_keys, other_file):
    """Raises on the first key of sec that is not in allowed."""
    lower = {k.lower(): k for k in allowed}
    for key in sec.keys():
        if key.lower() in lower:
            continue
        if key.lower() in {k.lower() for k in other_file_keys}:
            raise sec.error(key, f"belongs in the {other_file}")
        hint = difflib.get_close_matches(key.lower(), lower, n=1)
        suggestion = f" (did you mean '{lower[hint[0]]}'?)" if hint else ""
        raise sec.error(key, f"unknown key for this layer type{suggestion}; "
                             f"known: {', '.join(sorted(allowed, key=str.lower))}")


def _definition_entry(sec):
    """Reads type, inputs, gpu and neuron of one definition section."""
    if not _NAME_RE.fullmatch(sec.name):
        raise sec.error(None, "layer names may only use letters, digits, '_', '.' and '-'")
    type_name = sec.get_str("type")
    if type_name not in LAYER_PARSERS:
        raise sec.error("type", f"unknown layer type '{type_name}' (known: {', '.join(sorted(LAYER_PARSERS))})")
    parser = LAYER_PARSERS[type_name]()
    if not parser.takes_neuron and type_name != "neuron" and sec.has("neuron"):
        raise sec.error("neuron", f"a {type_name} layer takes no neuron=")
    _check_keys(sec, parser.definition_keys(), parser.learning_keys, "layer-params file")
    inputs = []
    if parser.max_inputs != 0:
        inputs = [name.strip() for name in sec.get_str("inputs").split(",")]
        for name in inputs:
            if not _NAME_RE.fullmatch(name):
                raise sec.error("inputs", f"'{name}' is not a layer name")
        if len(inputs) < parser.min_inputs or (parser.max_inputs is not None and len(inputs) > parser.max_inputs):
            wanted = (f"exactly {parser.min_inputs}" if parser.min_inputs == parser.max_inputs
                      else f"at least {parser.min_inputs}")
            raise sec.error("inputs", f"a {type_name} layer takes {wanted} input(s), got {len(inputs)}")
    layer = {"name": sec.name, "type": type_name, "inputs": inputs}
    gpu, replicas = None, None
    if sec.has("gpu"):
        # cuda-convnet2: gpu=0,1 makes data-parallel replicas of the layer on those devices
        replicas = sec.get_list("gpu", len(_split_top_level(sec.get_str("gpu"))), _parse_int)
        for device in replicas:
            sec._check_range("gpu", device, 0, None)
        if len(set(replicas)) != len(replicas):
            raise sec.error("gpu", f"'{sec.get_str('gpu')}' lists a device twice")
        gpu = replicas[0]
        if len(replicas) > 1:
            layer["replicas"] = replicas
    neuron = None
    if parser.takes_neuron and sec.has("neuron"):
        neuron = sec.convert("neuron", sec.get_str("neuron"), _canonical_neuron)
    return parser, layer, gpu, neuron


def _topological_order(names, inputs_of, sections):
    """Kahn's algorithm, taking the earliest ready layer in file order; raises on a cycle."""
    position = {name: i for i, name in enumerate(names)}
    pending = {name: len(set(inputs_of[name])) for name in names}
    consumers = {name: [] for name in names}
    for name in names:
        for source in set(inputs_of[name]):
            consumers[source].append(name)
    ready = sorted((n for n in names if pending[n] == 0), key=position.get)
    order = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for consumer in consumers[name]:
            pending[consumer] -= 1
            if pending[consumer] == 0:
                ready.append(consumer)
        ready.sort(key=position.get)
    if len(order) < len(names):
        stuck = [n for n in names if n not in set(order)]
        path, node = [], stuck[0]
        while node not in path:
            path.append(node)
            node = next(i for i in inputs_of[node] if i in stuck)
        cycle = path[path.index(node):] + [node]
        sec = sections[cycle[0]]
        raise sec.error("inputs", f"cycle: {' <- '.join(cycle)}")
    return order


# The 2012 release's per-layer quantization of activations (quantF) and gradients (quantB):
# "default" (none) or "half"; any layer's layer-params section may give them.
_QUANTIZATION_KEYS = frozenset({"quantF", "quantB"})


def _apply_params_file(params_path, layers, parsers, def_sections, resuming):
    """Reads the layer-params file and applies it to every layer (in place)."""
    sections = {sec.name: sec for sec in _read_ini(params_path)}
    layers_by_name = {layer["name"]: layer for layer in layers}
    for name, sec in sections.items():
        if name not in layers_by_name:
            warn(f"{params_path}: [{name}] has no layer of this name in the layer definition; ignored")
            continue
        parser = parsers[name]
        definition_only = parser.definition_keys() - set(parser.tunable_keys) - {"type"}
        _check_keys(sec, set(parser.tunable_keys) | set(parser.learning_keys) | _QUANTIZATION_KEYS, definition_only,
                    "layer definition file")
        for key in _QUANTIZATION_KEYS:
            if sec.has(key) and sec.get_str(key).lower() != "default":
                raise sec.error(key, f"'{sec.get_str(key)}': only default (float32 activations and gradients) is "
                                     "supported")
    for layer in layers:
        name = layer["name"]
        source = _ParamSource(params_path, name, sections.get(name), def_sections.get(name), resuming)
        parsers[name].apply_params(source, layer, layers_by_name)


def _share_connectivity(layers, sections):
    """A sparse matrix shared through weightSource takes its owner's connectivity (as in
    cuda-convnet): the same filters must see the same channels."""
    for name, layer in layers.items():
        conns = layer.get("filterConns")
        if not conns or "weightSource" not in layer:
            continue
        sources = layer["weightSource"] if isinstance(layer["weightSource"], list) else [layer["weightSource"]]
        for i, source in enumerate(sources):
            if not source or conns[i] is None:
                continue
            match = _SOURCE_RE.fullmatch(source)
            owner, index = match.group(1), int(match.group(2) or 0)
            owner_conns = (layers.get(owner) or {}).get("filterConns")
            if not owner_conns or index >= len(owner_conns) or owner_conns[index] is None:
                raise sections[name].error("weightSource", f"input {i} uses randSparse but '{source}' does not")
            if len(owner_conns[index]) != len(conns[i]):
                raise sections[name].error("weightSource", f"'{source}' sees {len(owner_conns[index])} channels per "
                                                           f"group set, input {i} {len(conns[i])}")
            conns[i] = list(owner_conns[index])


def load_layers(layer_def_path, layer_params_path, data_dims, class_tree=None):
    """Parses both layer files into the resolved layer list of docs/layer-dicts.md.

    data_dims maps a dataIdx to (channels, imgSizeY, imgSizeX) or to an int (flat rows);
    class_tree is the data provider's class tree (DataProvider.class_tree: each node's parent),
    which treefc layers read.
    Raises ConfigError (a ValueError) naming file, section and key on any problem."""
    data_dims = _check_data_dims(data_dims)
    sections = _read_ini(layer_def_path)
    if not sections:
        raise ConfigError(layer_def_path, None, None, "defines no layers")
    parsers, layers, gpus, sections_by_name, neurons = {}, {}, {}, {}, {}
    for sec in sections:
        parser, layer, gpu, neuron = _definition_entry(sec)
        parsers[sec.name], layers[sec.name], gpus[sec.name], sections_by_name[sec.name] = parser, layer, gpu, sec
        if neuron is not None:
            neurons[sec.name] = neuron

    for name, layer in layers.items():
        for source in layer["inputs"]:
            if source not in layers:
                raise sections_by_name[name].error("inputs", f"no layer named '{source}'")
            if layers[source]["type"].startswith("cost."):
                raise sections_by_name[name].error("inputs", f"'{source}' is a cost layer; costs feed no layer")

    # neuron= shorthand: X keeps its type, X_neuron applies the neuron, consumers of X read X_neuron.
    names = []
    owner_section = {}  # every layer -> the definition section its errors name
    for sec in sections:
        names.append(sec.name)
        owner_section[sec.name] = sec
        if sec.name not in neurons:
            continue
        neuron_name = f"{sec.name}_neuron"
        if neuron_name in layers:
            raise sec.error("neuron", f"the neuron layer it creates, '{neuron_name}', is already defined")
        for layer in layers.values():
            layer["inputs"] = [neuron_name if i == sec.name else i for i in layer["inputs"]]
        layers[neuron_name] = {"name": neuron_name, "type": "neuron", "inputs": [sec.name]}
        parsers[neuron_name] = NeuronLayerParser()
        gpus[neuron_name] = None
        owner_section[neuron_name] = _Section(sec.path, sec.name, [("neuron", neurons[sec.name])])
        names.append(neuron_name)

    order = _topological_order(names, {n: layers[n]["inputs"] for n in names}, owner_section)
    consumed = {source for layer in layers.values() for source in layer["inputs"]}
    for name in names:
        if name not in consumed and not layers[name]["type"].startswith("cost."):
            raise owner_section[name].error(None, f"layer '{name}' ({layers[name]['type']}) is not used by any "
                                                  "layer; only cost layers may end the net")

    resolved = []
    for name in order:
        layer = layers[name]
        inputs = [layers[i] for i in layer["inputs"]]
        if gpus[name] is not None:
            layer["gpu"] = gpus[name]
        else:  # cuda-convnet2: a layer runs where its first input runs, replicas included
            layer["gpu"] = inputs[0]["gpu"] if inputs else 0
            if inputs and "replicas" in inputs[0]:
                layer["replicas"] = list(inputs[0]["replicas"])
        parsers[name].class_tree = class_tree
        parsers[name].resolve(owner_section[name], layer, inputs, data_dims)
        resolved.append(layer)

    _share_connectivity(layers, owner_section)
    _apply_params_file(layer_params_path, resolved, parsers,
                       {sec.name: sec for sec in sections}, resuming=False)
    return resolved


def load_layer_params(layer_params_path, layers):
    """Re-reads a layer-params file into an already resolved layer list (in place), as on
    resume. Learning parameters must all be given again; tunable values (scale, pow, minDiv,
    coeff, keep, coeffs, topk) the file omits keep their current values. Returns layers."""
    parsers = {}
    for layer in layers:
        if layer["type"] not in LAYER_PARSERS:
            raise ValueError(f"layer '{layer['name']}' has unknown type '{layer['type']}'")
        parsers[layer["name"]] = LAYER_PARSERS[layer["type"]]()
    _apply_params_file(layer_params_path, layers, parsers, {}, resuming=True)
    return layers


def learning_params(layer, progress, rng=None):
    """(epsW, epsB, momW, momB, wc) of a weight layer at training progress in [0, 1]: the
    schedules evaluated, as Net.set_learning_params takes them (rng: the draws of noisy
    schedules)."""
    return ([schedule_value(s, progress, rng) for s in layer["epsW"]], schedule_value(layer["epsB"], progress, rng),
            list(layer["momW"]), layer["momB"], list(layer["wc"]))


def set_learning_params(net, layers, progress, rng=None):
    """Sets every weight layer's learning parameters on net at progress in [0, 1]. The engine
    starts with all of them 0 (frozen): the schedules are evaluated here only."""
    for layer in layers:
        if "epsW" in layer:
            net.set_learning_params(layer["name"], *learning_params(layer, progress, rng))


def output_layer(layers_by_name, name):
    """The layer holding `name`'s output as the layer file means it: `name`_neuron when the
    layer has the neuron= shorthand (split off into its own layer, which consumers read)."""
    neuron = layers_by_name.get(f"{name}_neuron")
    if neuron is not None and neuron["type"] == "neuron" and neuron["inputs"] == [name]:
        return neuron
    return layers_by_name[name]
