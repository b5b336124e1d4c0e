"""Data-provider base: batch walking, seeded per-batch randomness, background loading, registry.

A provider hands the trainer one batch at a time as ``(epoch, batchnum, [data, labels])``:
``data`` is a float32 C-contiguous matrix of shape (rows, numCases) with the case index
fastest (cuda-convnet's layout; for images rows = channels*imgSizeY*imgSizeX in (C, H, W)
order), ``labels`` is float32 of shape (1, numCases) holding class indices.

Batches are walked in the order of ``batch_range``; an epoch is one full pass over it.
``curr_epoch`` / ``curr_batchnum`` name the batch the next call returns (cuda-convnet's
convention), so a checkpoint stores them and ``set_position`` restores them. Every random
choice made for a batch (case shuffling, crops, flips, noise) comes from a generator seeded
by ``(seed, epoch, batchnum)``, so a resumed run draws exactly what the original run drew.
"""
import concurrent.futures
import inspect
import re
from typing import Any, Callable, NamedTuple

import numpy as np

PROVIDERS = {}
PROVIDER_PATTERNS = []  # (compiled regex, provider name, match -> params), for names like dummy-cn-3072


class ProviderOption(NamedTuple):
    """A command-line option a provider takes: ``--name-with-dashes`` on convnet.py, passed to
    the provider's constructor as the keyword ``name``."""
    name: str
    type: Callable  # int, float or bool
    default: Any
    help: str
    phase: str = "both"  # "train": only the training provider gets it; "test": only the test one


def provider_options():
    """{option name: (ProviderOption, [providers that take it])} over every registered provider.
    Providers that share an option must declare it alike."""
    found = {}
    for provider_name, cls in sorted(PROVIDERS.items()):
        for option in cls.options:
            if option.name in found and found[option.name][0][:3] != option[:3]:
                raise ValueError(f"providers declare option {option.name!r} differently")
            found.setdefault(option.name, (option, []))[1].append(provider_name)
    return found


def register_provider_pattern(pattern, provider, params_of_match):
    """Makes names matching ``pattern`` build ``provider`` with ``params_of_match(match)``
    added to the caller's parameters (e.g. dummy-cn-N: the dummy provider with N rows)."""
    PROVIDER_PATTERNS.append((re.compile(pattern), provider, params_of_match))


def resolve_provider_name(name):
    """(registered provider name, parameters the name implies) for a name or a pattern name."""
    if name in PROVIDERS:
        return name, {}
    for pattern, provider, params_of_match in PROVIDER_PATTERNS:
        match = pattern.fullmatch(str(name))
        if match:
            return provider, params_of_match(match)
    known = sorted(PROVIDERS) + [p.pattern for p, _, _ in PROVIDER_PATTERNS]
    raise ValueError(f"unknown data provider {name!r}; known: {', '.join(known)}")


def provider_params(name, op, test):
    """The keyword parameters of provider `name` for one phase, taken from the options dict op.
    An option of another provider set to other than its default is refused (never ignored)."""
    provider, _ = resolve_provider_name(name)
    phase = "test" if test else "train"
    declared = {o.name for o in PROVIDERS[provider].options}
    for option_name, (option, providers) in provider_options().items():
        if option_name not in declared and op.get(option_name, option.default) != option.default:
            raise ValueError(f"--{option_name.replace('_', '-')}: the {name} provider does not take it "
                             f"({', '.join(providers)} do)")
    return {o.name: op.get(o.name, o.default) for o in PROVIDERS[provider].options if o.phase in ("both", phase)}


class MissingDataError(FileNotFoundError):
    """A data file or folder a provider needs does not exist."""


class CorruptDataError(ValueError):
    """A data file exists but is not in the expected format (bad header, wrong size, truncated)."""


def class_tree_parents(children, root, num_classes, where):
    """A class tree (treefc layers) as each node's parent, -1 at the root, from cuda-convnet's
    batches.meta form: children = {node: [child nodes]} over nodes 0..N-1, the root's number.
    The leaves must be the labels 0..num_classes-1 and every node reachable from the root
    once; CorruptDataError naming `where` otherwise."""
    def bad(message):
        return CorruptDataError(f"{where}: class tree: {message}")

    if not isinstance(children, dict) or not children:
        raise bad("'tree' must map each node number to a list of its children")
    nodes = len(children)
    if sorted(children) != list(range(nodes)) or any(isinstance(k, bool) for k in children):
        raise bad(f"its nodes must be numbered 0..{nodes - 1}")
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < nodes:
        raise bad(f"root {root!r} is not one of its nodes")
    parents = [None] * nodes
    parents[int(root)] = -1
    for node in range(nodes):
        kids = children[node]
        if not isinstance(kids, (list, tuple)):
            raise bad(f"node {node}: children must be a list, got {type(kids).__name__}")
        for kid in kids:
            if isinstance(kid, bool) or not isinstance(kid, (int, np.integer)) or not 0 <= kid < nodes:
                raise bad(f"node {node}: child {kid!r} is not one of its nodes")
            if parents[kid] is not None:
                raise bad(f"node {kid} has two parents (or is the root)")
            parents[kid] = node
    seen, stack = 0, [int(root)]  # every node reachable from the root (no detached cycle)
    while stack:
        seen += 1
        stack.extend(int(k) for k in children[stack.pop()])
    if seen != nodes:
        raise bad(f"{nodes - seen} node(s) cannot be reached from the root {root}")
    leaves = sorted(n for n in range(nodes) if not children[n])
    if leaves != list(range(num_classes)):
        raise bad(f"its leaves must be the classes 0..{num_classes - 1} (it has {len(leaves)} leaves)")
    return [int(p) for p in parents]


def meta_class_tree(meta, num_classes, where):
    """The class tree of a batches.meta dict ('tree' and 'all_wnids'['gproot'], as the
    ImageNet meta files of cuda-convnet had them), as class_tree_parents; None without one."""
    if "tree" not in meta:
        return None
    wnids = meta.get("all_wnids")
    if not isinstance(wnids, dict) or "gproot" not in wnids:
        raise CorruptDataError(f"{where}: a 'tree' needs all_wnids['gproot'] (the root node)")
    return class_tree_parents(meta["tree"], wnids["gproot"], num_classes, where)


def register_provider(name):
    """Class decorator: make a provider class available to ``get_provider`` under ``name``."""
    def register(cls):
        if name in PROVIDERS:
            raise ValueError(f"data provider {name!r} registered twice")
        cls.name = name
        PROVIDERS[name] = cls
        return cls
    return register


def get_provider(name, data_path, batch_range, test=False, **params):
    """Build the provider registered as ``name``.

    data_path: folder holding the data (None: the provider's default, if it has one).
    batch_range: batch numbers to walk, in order: an iterable of ints, a cuda-convnet range
    string such as "1-5" or "1-3,6", or None for the provider's default train/test range.
    test: True for a test provider (no shuffling or random augmentation).
    params: provider-specific keyword parameters (seed, multiview, inner_size, ...).
    """
    name, implied = resolve_provider_name(name)
    params = {**implied, **params}
    cls = PROVIDERS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "data_path", "batch_range", "test")]
    for key in params:
        if key not in accepted:
            raise TypeError(f"data provider {name!r} has no parameter {key!r}; "
                            f"its parameters: {', '.join(accepted)}")
    return cls(data_path, batch_range, test=test, **params)


def parse_batch_range(batch_range):
    """A list of batch numbers from an iterable of ints or a string like "1-5" / "1-3,6"."""
    if isinstance(batch_range, str):
        numbers = []
        for part in batch_range.replace(" ", "").split(","):
            first, sep, last = part.partition("-")
            try:
                lo = int(first)
                hi = int(last) if sep else lo
            except ValueError:
                raise ValueError(f"batch_range {batch_range!r}: expected ranges like '1-5' or '1-3,6'") from None
            if hi < lo:
                raise ValueError(f"batch_range {batch_range!r}: range {part!r} runs backwards")
            numbers.extend(range(lo, hi + 1))
        return numbers
    try:
        numbers = list(batch_range)
    except TypeError:
        raise TypeError(f"batch_range must be an iterable of ints or a string, got {batch_range!r}") from None
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, (int, np.integer)):
            raise TypeError(f"batch_range entries must be ints, got {number!r}")
    return [int(n) for n in numbers]


def batch_rng(seed, epoch, batchnum):
    """The generator for everything random about one batch of one epoch (counter-based seeding)."""
    return np.random.default_rng([seed, epoch, batchnum])


def to_layout(cases, chunk=64):
    """(numCases, ...) array of any real dtype -> float32 C-contiguous (rows, numCases),
    case index fastest. Transposes ``chunk`` cases at a time: each block stays in cache,
    which makes this 2-4x faster than one whole-array transposed copy for 10000-case
    batches (and converting uint8 during the copy moves a quarter of the bytes)."""
    cases = np.asarray(cases)
    cases = cases.reshape(len(cases), -1)
    data = np.empty((cases.shape[1], cases.shape[0]), dtype=np.float32)
    for start in range(0, len(cases), chunk):
        data[:, start:start + chunk] = cases[start:start + chunk].T
    return data


def labels_row(labels):
    """Class indices -> float32 (1, numCases)."""
    return np.ascontiguousarray(np.asarray(labels, dtype=np.float32).reshape(1, -1))


class BackgroundLoader:
    """Runs ``load(*key)`` in one worker thread, one request ahead of its consumer.

    ``prefetch(key)`` starts a load; ``get(key)`` returns its result (loading now if a
    different key was prefetched) and re-raises any exception the load raised. A prefetch
    that is no longer wanted is dropped: the single worker runs requests in order, so it
    never races with the next one.
    """

    def __init__(self, load, name="data-loader"):
        self._load = load
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._key = None
        self._future = None
        self._closed = False

    def prefetch(self, key):
        self._check_open()
        self.discard()
        self._key = key
        self._future = self._executor.submit(self._load, *key)

    def get(self, key):
        self._check_open()
        if self._future is None or self._key != key:
            self.prefetch(key)
        future, self._future, self._key = self._future, None, None
        return future.result()

    def discard(self):
        if self._future is not None:
            self._future.cancel()
        self._future, self._key = None, None

    def close(self):
        """Stop the worker thread (waits for a load in progress); safe to call twice."""
        if not self._closed:
            self._closed = True
            self.discard()
            self._executor.shutdown(wait=True, cancel_futures=True)

    def _check_open(self):
        if self._closed:
            raise RuntimeError("data provider is closed")


class DataProvider:
    """Base class. A subclass stores its own parameters, then calls ``super().__init__``,
    which validates the batch range and calls the subclass's ``setup()`` (read metadata and
    files, set ``data_dims`` = (channels, imgSizeY, imgSizeX) and ``label_names``) before
    the first background load starts. Subclasses also implement ``load_batch(epoch,
    batchnum)`` -> [data, labels], ``valid_batches()`` (a container of the batch numbers
    that exist; may not depend on ``setup``) and ``default_batch_range(test)``.

    ``load_batch`` runs in the background thread: it must be a pure function of its
    arguments and the provider's read-only state.
    """

    name = None
    num_views = 1
    label_names = []
    # A class tree over the labels (for treefc layers): each node's parent, -1 at the root,
    # leaves 0..num_classes-1 (class_tree_parents); None when the data has none.
    class_tree = None
    options = ()  # the ProviderOptions this provider takes from the command line

    def __init__(self, data_path, batch_range, test, seed):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.data_path = data_path
        self.test = bool(test)
        self.seed = int(seed)
        if batch_range is None:
            batch_range = self.default_batch_range(self.test)
        self.batch_range = parse_batch_range(batch_range)
        if not self.batch_range:
            raise ValueError("batch_range is empty")
        valid = self.valid_batches()
        for number in self.batch_range:
            if number not in valid:
                raise ValueError(f"batch_range: {self.name} has no batch {number} "
                                 f"(its batches: {_describe_batches(valid)})")
        self.curr_epoch = 1
        self._batch_idx = 0
        self.setup()
        self._loader = BackgroundLoader(self.load_batch, name=f"{self.name}-loader")
        self._loader.prefetch(self._position())

    @property
    def curr_batchnum(self):
        return self.batch_range[self._batch_idx]

    def get_next_batch(self):
        """(epoch, batchnum, [data, labels]) of the current position, then advance."""
        epoch, batchnum = self._position()
        batch = self._loader.get((epoch, batchnum))
        self._batch_idx += 1
        if self._batch_idx == len(self.batch_range):
            self._batch_idx = 0
            self.curr_epoch += 1
        self._loader.prefetch(self._position())
        return epoch, batchnum, batch

    def set_position(self, epoch, batchnum):
        """Make (epoch, batchnum) the batch the next ``get_next_batch`` returns."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 1:
            raise ValueError(f"set_position: epoch must be an int >= 1, got {epoch!r}")
        if batchnum not in self.batch_range:
            raise ValueError(f"set_position: batchnum {batchnum!r} is not in batch_range {self.batch_range}")
        self.curr_epoch = int(epoch)
        self._batch_idx = self.batch_range.index(batchnum)
        self._loader.prefetch(self._position())

    def mean_column(self):
        """The mean image subtracted from every data column, as (rows,) in the data's units, so
        that shownet can add it back; None where there is none of the data's size (crops)."""
        return None

    def get_data_dims(self, idx=0):
        """(channels, imgSizeY, imgSizeX) for idx 0 (data; an int for flat data); 1 for idx 1
        (labels: one row)."""
        if idx == 0:
            return self.data_dims if isinstance(self.data_dims, int) else tuple(self.data_dims)
        if idx == 1:
            return 1
        raise ValueError(f"get_data_dims: idx must be 0 (data) or 1 (labels), got {idx!r}")

    def get_num_classes(self):
        return len(self.label_names)

    def close(self):
        """Stop the background loader thread."""
        self._loader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _position(self):
        return self.curr_epoch, self.curr_batchnum


def _describe_batches(valid):
    if isinstance(valid, range) and valid.step == 1:
        return f"{valid.start}-{valid.stop - 1}"
    return ", ".join(str(n) for n in valid)
