"""shownet.py: plots of a trained net from its checkpoint, as cuda-convnet's shownet drew them.

Each plot is a PNG file (matplotlib, Agg backend, so no display is needed; ``--show`` also
opens the figures in a window where a display exists):

* ``--show-cost=<cost layer>``: the training and test curves of one value of that cost
  layer (``--cost-idx``: 0 cost, 1 error, 2 top-k error) against epochs, from the
  checkpoint's ``train_outputs`` / ``test_outputs`` lists of
  ``(epoch, batchnum, {layer: [cost, error, topk error] averages}, cases)``.
* ``--show-filters=<conv|local|fc layer>``: the layer's weights drawn as filters. Layouts
  (docs/DESIGN.md): conv ``(filterChannels*filterSize^2, filters)`` with rows ordered (channel,
  row, col); local ``(modules*filterChannels*filterSize^2, filters)``, modules outermost
  (a few random modules are drawn); fc ``(inputs, outputs)``, whose rows follow the input
  layer's (channel, row, col) order when that input is an image. Three-channel filters are
  drawn in colour, other channel counts (or ``--no-rgb``) as grey channels side by side.
  An fc layer on a flat input is drawn as its weight matrix.
* ``--show-preds=<softmax layer>``: test images, each beside a bar chart of its most
  probable classes with the true class in red (``--only-errors``: misclassified ones only).
* ``--show-maps=<layer>``: a layer's activation maps for a few test images (after its
  neuron, when the layer file gives it one with ``neuron=``).

The last two run the net on the first test batch through ``Trainer`` in test-only mode,
so the checkpoint's options (data provider, data path, devices) apply; ``--data-path``,
``--test-range``, ``--gpu`` and ``--layer-params`` override them.
"""
import math
import os
import sys
import textwrap

import numpy as np

from . import checkpoint, config, options
from .weights import WEIGHT_TYPES

COST_VALUES = ("cost", "error", "top-k error")
MAX_FILTERS = 64           # filters drawn by default in a grid (--max-filters); an fc layer may have thousands
MAX_FILTER_ROWS = 24       # filters drawn by default one per row (many channels each)
DEFAULT_GREY_CHANNELS = 16  # channels drawn per grey filter unless --channels says otherwise
MIN_TILE_PIXELS = 36       # a filter tile is drawn at least this many screen pixels wide
LOCAL_MODULES = 4          # random modules drawn for a local layer
NUM_PREDS = 16             # test images in --show-preds
TOP_CLASSES = 5            # bars per image in --show-preds
NUM_MAP_IMAGES = 3         # test images in --show-maps
MAX_MAPS = 64              # maps drawn per image
SMOOTH_WINDOW = 5          # test points averaged by --smooth-test-errors
NUM_QUERIES = 8            # test images in --show-similar
DPI = 100


class ShowError(ValueError):
    """A request shownet cannot draw; the message names the option and the problem."""


def build_parser():
    p = options.Parser(prog="shownet.py", description="Plots of a trained net from its checkpoint.")
    a = p.add_argument

    def flag(name, dest, text):
        a(name, dest=dest, nargs="?", const=True, default=False, type=options._bool, help=text)

    a("-f", "--load-file", dest="load_file", required=True,
      help="checkpoint file, or a run directory (its newest checkpoint)")
    a("--out", dest="out", help="directory for the PNG files (default: the checkpoint's directory)")
    flag("--show", "show", "also open the figures in a window (where a display exists)")
    a("--show-cost", dest="show_cost", help="cost layer whose training and test curves to draw")
    a("--cost-idx", dest="cost_idx", type=int, default=0, help="value of the cost layer: 0 cost, 1 error, 2 top-k error")
    flag("--smooth-test-errors", "smooth_test_errors", f"average the test curve over {SMOOTH_WINDOW} test points")
    a("--show-filters", dest="show_filters", help="conv, local or fc layer whose weights to draw")
    a("--input-idx", dest="input_idx", type=int, default=0, help="which input's weights (layers with several inputs)")
    a("--channels", dest="channels", type=int,
      help=f"grey filters: channels drawn per filter (default: all, at most {DEFAULT_GREY_CHANNELS})")
    flag("--no-rgb", "no_rgb", "draw 3-channel filters as grey channels side by side")
    flag("--norm-filters", "norm_filters", "scale each filter to its own range (default: one range for all)")
    a("--max-filters", dest="max_filters", type=int,
      help=f"filters drawn, the first ones (default {MAX_FILTERS} in a grid, {MAX_FILTER_ROWS} one per row)")
    a("--show-preds", dest="show_preds", help="softmax layer whose predictions on test images to draw")
    flag("--only-errors", "only_errors", "--show-preds: misclassified images only")
    a("--show-maps", dest="show_maps", help="layer whose activation maps on test images to draw")
    a("--show-similar", dest="show_similar",
      help="layer in whose feature space test images are drawn beside their nearest training images")
    a("--neighbours", dest="neighbours", type=int, default=5, help="--show-similar: training images per query (default 5)")
    a("--queries", dest="queries", type=int, default=NUM_QUERIES,
      help=f"--show-similar: test images drawn (default {NUM_QUERIES}); the class agreement counts all")
    a("--search", dest="search", choices=("auto", "exact", "faiss"), default="auto",
      help="--show-similar: exact (NumPy), faiss (approximate, pip install 'ccn[retrieval]') or auto "
           "(exact up to 200,000 training images)")
    a("--data-path", dest="data_path", help="data directory (default: the checkpoint's)")
    a("--test-range", dest="test_range", type=options._range, help="test batches (default: the checkpoint's)")
    a("--gpu", dest="gpu", type=options._devices, help="logical devices for running the net (default: the checkpoint's)")
    a("--layer-params", dest="layer_params", help="layer-params file (default: the checkpoint's)")
    a("--allow-pickle", dest="allow_pickle", action="store_true", help="load an old pickle checkpoint (it can run code)")
    options.add_originals(p, SHOWNET_REFUSED, {})
    return p


# cuda-convnet's shownet.py options this one does not take, with what to use instead.
_FEATURES = "use convnet.py -f CHECKPOINT --write-features=LAYER --feature-path=DIR"
SHOWNET_REFUSED = {
    "--write-features": _FEATURES,
    "--feature-path": _FEATURES,
    "--yuv-to-rgb": "the providers here give RGB images",
    "--save-preds": "--show-preds writes its figure to --out as a PNG",
    "--local-plane": "use --show-filters with --input-idx and --channels",
    "--show-data-grad": "not drawn; use --show-maps on the data layer",
    "--webcam": "not supported",
    "--train-range": "shownet draws test images: use --test-range",
    "--multiview-test": "use convnet.py -f CHECKPOINT --test-only=1 --multiview-test=1",
    "--logreg-name": "use convnet.py -f CHECKPOINT --test-only=1 --multiview-test=1 --logreg-name=NAME",
}


def shownet(args):
    """Draws every plot args asks for; prints and returns the paths of the PNG files."""
    state, ckpt_path, run_dir = checkpoint.load(args.load_file, allow_pickle=args.allow_pickle)
    layers = {layer["name"]: layer for layer in state["layers"]}
    _check_request(args, state, layers)
    out_dir = args.out or run_dir
    os.makedirs(out_dir, exist_ok=True)
    plt = _pyplot(args.show)
    written = []

    def save(fig, name):
        target = os.path.join(out_dir, name)
        fig.savefig(target, dpi=DPI)
        if not args.show:
            plt.close(fig)
        print(target, flush=True)
        written.append(target)

    checkpoint_name = os.path.basename(ckpt_path)
    if args.show_cost:
        fig = plot_cost(plt, state, args.show_cost, args.cost_idx, args.smooth_test_errors)
        save(fig, file_name(args.show_cost, COST_VALUES[args.cost_idx].replace(" ", "-"), checkpoint_name,
                            smoothed=args.smooth_test_errors))
    if args.show_filters:
        fig = plot_filters(plt, layers[args.show_filters], layers, state["params"][args.show_filters],
                           args.input_idx, args.channels, not args.no_rgb, args.norm_filters, args.max_filters)
        save(fig, file_name(args.show_filters, "filters", checkpoint_name, input=args.input_idx, grey=args.no_rgb,
                            norm=args.norm_filters, channels=args.channels,
                            max=args.max_filters))
    if args.show_preds or args.show_maps or args.show_similar:
        with _TestBatch(state, run_dir, args) as batch:
            if args.show_similar:
                cache = os.path.join(run_dir or os.path.dirname(ckpt_path), "features",
                                     f"similar-{args.show_similar}-{os.path.basename(ckpt_path)}.npz")
                fig = plot_similar(plt, batch, args.show_similar, args.neighbours, args.queries, args.search, cache)
                save(fig, file_name(args.show_similar, "similar", checkpoint_name, k=args.neighbours,
                                    queries=args.queries if args.queries != NUM_QUERIES else None,
                                    search=args.search if args.search != "auto" else None, test=batch.batchnum))
            if args.show_preds:
                fig = plot_preds(plt, batch, layers[args.show_preds], args.only_errors)
                if fig is not None:
                    save(fig, file_name(args.show_preds, "errors" if args.only_errors else "preds", checkpoint_name,
                                        test=batch.batchnum))
            if args.show_maps:
                save(plot_maps(plt, batch, layers, args.show_maps),
                     file_name(args.show_maps, "maps", checkpoint_name, test=batch.batchnum))
    if args.show:
        plt.show()
    return written


def file_name(layer, kind, checkpoint_name, **options):
    """<layer>-<kind>[-<option><value>...]-<checkpoint>.png: plots of other layers, kinds, options
    or checkpoints never overwrite each other (flags appear by name, values after it)."""
    parts = [layer, kind]
    for key, value in options.items():
        if value is None or value is False or (key == "input" and value == 0):
            continue
        parts.append(key if value is True else f"{key}{value}")
    return "-".join(parts + [checkpoint_name]) + ".png"


def _pyplot(show):
    """pyplot on the Agg backend, or on the default interactive one for --show with a display."""
    import matplotlib
    if show and not _has_display():
        print("shownet: no display found; --show ignored, writing PNG files only", file=sys.stderr)
        show = False
    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _has_display():
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# -- argument checks (all before any drawing, so a typo fails at once) ----------------------------
def _layer(layers, name, option):
    if name not in layers:
        raise ShowError(f"--{option}: no layer named '{name}' (layers: {', '.join(layers)})")
    return layers[name]


def _check_request(args, state, layers):
    if not (args.show_cost or args.show_filters or args.show_preds or args.show_maps or args.show_similar):
        raise ShowError("nothing to show: give --show-cost, --show-filters, --show-preds, --show-maps or --show-similar")
    if args.show_similar:
        _layer(layers, args.show_similar, "show-similar")
        if args.neighbours < 1 or args.queries < 1:
            raise ShowError("--neighbours and --queries must be at least 1")
    if args.show_cost:
        layer = _layer(layers, args.show_cost, "show-cost")
        if not layer["type"].startswith("cost."):
            raise ShowError(f"--show-cost: layer '{layer['name']}' is a {layer['type']} layer, not a cost layer")
        if not 0 <= args.cost_idx < len(COST_VALUES):
            raise ShowError(f"--cost-idx: {args.cost_idx} is not 0 (cost), 1 (error) or 2 (top-k error)")
    if args.show_filters:
        layer = _layer(layers, args.show_filters, "show-filters")
        if layer["type"] not in WEIGHT_TYPES:
            raise ShowError(f"--show-filters: layer '{layer['name']}' is a {layer['type']} layer and has no "
                            f"weights (give a conv, local or fc layer)")
        count = len(state["params"][layer["name"]]["weights"])
        if not 0 <= args.input_idx < count:
            raise ShowError(f"--input-idx: layer '{layer['name']}' has {count} weight matrix(es) "
                            f"(indices 0..{count - 1}), not {args.input_idx}")
        available = _filter_channels(layer, layers, args.input_idx)
        if args.channels is not None and available is None:
            raise ShowError(f"--channels: layer '{layer['name']}' reads a flat input; it is drawn as a matrix")
        if args.channels is not None and not 1 <= args.channels <= available:
            raise ShowError(f"--channels: layer '{layer['name']}' has {available}-channel filters; "
                            f"{args.channels} cannot be drawn")
    if args.show_preds:
        layer = _layer(layers, args.show_preds, "show-preds")
        if layer["type"] != "softmax":
            raise ShowError(f"--show-preds: layer '{layer['name']}' is a {layer['type']} layer, not a softmax layer")
    if args.show_maps:
        _layer(layers, args.show_maps, "show-maps")


# -- cost curves -----------------------------------------------------------------------------------
def _epoch_positions(train_outputs, train_range):
    """(epoch, batchnum) -> x in epochs: the k-th batch of epoch e (k from 1) sits at e - 1 + k/B."""
    per_epoch = len(train_range) if train_range else max(
        (sum(1 for o in train_outputs if o[0] == e) for e in {o[0] for o in train_outputs}), default=1)
    positions, seen = {}, {}
    for epoch, batchnum, _, _ in train_outputs:
        seen[epoch] = seen.get(epoch, 0) + 1
        positions[(epoch, batchnum)] = epoch - 1 + seen[epoch] / per_epoch
    return positions


def _smooth(values, window):
    """Moving average over the last `window` points (fewer at the start)."""
    values = np.asarray(values, np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def plot_cost(plt, state, name, idx, smooth):
    train = [o for o in state.get("train_outputs", []) if name in o[2]]
    test = [o for o in state.get("test_outputs", []) if name in o[2]]
    if not train and not test:
        raise ShowError(f"--show-cost: the checkpoint records no outputs of '{name}'")
    positions = _epoch_positions(state.get("train_outputs", []), state["op"].get("train_range"))
    fig, ax = plt.subplots(figsize=(8, 5))
    label = COST_VALUES[idx]
    if idx == 2:  # top-k error: with the layer's k
        k = next((l.get("topk", 1) for l in state["layers"] if l["name"] == name), 1)
        label = f"top-{k} error"
    if train:
        ax.plot([positions[o[0], o[1]] for o in train], [o[2][name][idx] for o in train],
                color="tab:blue", linewidth=0.8, alpha=0.8, label="train")
    if test:
        xs = [positions.get((o[0], o[1]), float(o[0])) for o in test]
        ys = [o[2][name][idx] for o in test]
        if smooth:
            ax.plot(xs, ys, color="tab:red", linewidth=0.6, alpha=0.35)
            ys = _smooth(ys, SMOOTH_WINDOW)
        ax.plot(xs, ys, color="tab:red", marker="o", markersize=3, linewidth=1.5,
                label="test (smoothed)" if smooth else "test")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(f"{name}: {label}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


# -- filters ---------------------------------------------------------------------------------------
def _mosaic(tiles, ncols, gap, background=1.0):
    """Tiles (N, h, w) or (N, h, w, 3) laid out row by row in ncols columns, gap pixels apart."""
    n, h, w = tiles.shape[:3]
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + gap) + gap, ncols * (w + gap) + gap) + tiles.shape[3:], background, np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = tile
    return out


def _square_columns(n, tile_h, tile_w):
    """Columns that make n tiles of tile_h x tile_w pixels about as wide as tall."""
    return int(min(n, max(1, round(math.sqrt(n * tile_h / tile_w)))))


def _normalise(filters, each):
    """Scales filters (N, ...) to [0, 1]: each on its own range, or all on one."""
    axes = tuple(range(1, filters.ndim)) if each else None
    lo = filters.min(axis=axes, keepdims=True)
    hi = filters.max(axis=axes, keepdims=True)
    return (filters - lo) / np.maximum(hi - lo, 1e-12)


def _filter_channels(layer, layers, input_idx):
    """Channels of the layer's filters on input input_idx (None: an fc layer on a flat input)."""
    if layer["type"] in ("conv", "local"):
        return layer["filterChannels"]
    return layers[layer["inputs"][input_idx]].get("outChannels")


def _filter_images(layer, layers, weights, input_idx, rng):
    """[(panel title, filters (N, C, H, W))] of a weight layer's matrix input_idx, or None for an fc
    layer on a flat input; also a note on what was left out."""
    t = layer["type"]
    if t in ("conv", "local"):
        channels, size = layer["filterChannels"], layer["filterSize"]
        if t == "conv":
            return [("", weights.T.reshape(-1, channels, size, size))], ""
        modules = layer["modulesY"] * layer["modulesX"]
        per_module = weights.reshape(modules, channels * size * size, -1)
        picks = np.sort(rng.choice(modules, size=min(LOCAL_MODULES, modules), replace=False))
        return [(f"module ({m // layer['modulesX']}, {m % layer['modulesX']})",
                 per_module[m].T.reshape(-1, channels, size, size)) for m in picks], \
            f"{len(picks)} random modules of {modules}"
    source = layers[layer["inputs"][input_idx]]
    if "outChannels" not in source:
        return None, ""
    return [("", weights.T.reshape(-1, source["outChannels"], source["outSizeY"], source["outSizeX"]))], \
        f"input '{source['name']}' as {source['outChannels']}x{source['outSizeY']}x{source['outSizeX']} images"


def plot_filters(plt, layer, layers, params, input_idx, channels, rgb, norm_each, max_filters=None):
    """A weight layer's filters, numbered. Colour (three channels) or single-channel filters in a
    grid; filters of more channels one per row, their channels side by side (numbered columns).
    One range for all with a colour bar, or (norm_each) each filter on its own range."""
    weights = np.asarray(params["weights"][input_idx], np.float32)
    rng = np.random.default_rng(0)
    panels, note = _filter_images(layer, layers, weights, input_idx, rng)
    name = layer["name"]
    if panels is None:  # fc on a flat input: the matrix itself
        fig, ax = plt.subplots(figsize=(8, 6))
        image = ax.imshow(weights, aspect="auto", cmap="RdBu_r", interpolation="nearest")
        fig.colorbar(image, ax=ax, label="weight")
        ax.set_xlabel("output")
        ax.set_ylabel(f"input ({layer['inputs'][input_idx]})")
        ax.set_title(f"{name}: weights {weights.shape[0]}x{weights.shape[1]}")
        fig.tight_layout()
        return fig
    total, num_channels = panels[0][1].shape[0], panels[0][1].shape[1]
    colour = rgb and num_channels == 3
    grey = num_channels if colour else (channels or min(num_channels, DEFAULT_GREY_CHANNELS))
    per_row = not colour and grey > 1  # one filter per row, its channels across
    shown = min(total, max(1, max_filters or (MAX_FILTER_ROWS if per_row else MAX_FILTERS)))
    notes = [note] if note else []
    if shown < total:
        notes.append(f"filters 0-{shown - 1} of {total} (--max-filters)")
    if not colour and grey < num_channels:
        notes.append(f"channels 0-{grey - 1} of {num_channels} (--channels)")
    stacked = np.stack([f[:shown, :grey] for _, f in panels])  # (panels, N, C, H, W)
    lo, hi = float(stacked.min()), float(stacked.max())
    scaled = _normalise(stacked.reshape(-1, *stacked.shape[2:]), norm_each).reshape(stacked.shape)
    size = stacked.shape[-1]
    gap = max(2, size // 3)
    if per_row:
        tiles = scaled.reshape(len(panels), shown * grey, size, size)
        ncols = grey
    else:
        tiles = scaled[:, :, :, :, :].transpose(0, 1, 3, 4, 2) if colour else scaled[:, :, 0]
        ncols = min(shown, max(4, _square_columns(shown, 1, 1)))
    mosaics = [(title, _mosaic(panel_tiles, ncols, gap, background=np.nan if not colour else 1.0))
               for (title, _), panel_tiles in zip(panels, tiles)]
    panel_h, panel_w = mosaics[0][1].shape[:2]
    pcols = _square_columns(len(mosaics), panel_h, panel_w)
    prows = -(-len(mosaics) // pcols)
    # every filter pixel a block of screen pixels: tiles at least MIN_TILE_PIXELS wide when the
    # figure stays under about 1800x2400 pixels
    pixel = max(MIN_TILE_PIXELS / size, 4.0)
    pixel = min(pixel, 1800.0 / (pcols * panel_w), 2400.0 / (prows * panel_h))
    label_room = 0.5 if per_row else 0.2
    fig, axes = plt.subplots(prows, pcols, squeeze=False, layout="constrained",
                             figsize=(max(5.0, pcols * (panel_w * pixel / DPI + label_room) + 1.2),
                                      max(3.0, prows * (panel_h * pixel / DPI + label_room) + 0.8)))
    for ax in axes.flat:
        ax.set_axis_off()
    cmap = None if colour else "gray"
    image = None
    for ax, (title, mosaic) in zip(axes.flat, mosaics):
        ax.set_axis_on()
        # drawn in weight units (one range) so that the colour bar reads weights
        shown_image = mosaic if (colour or norm_each) else lo + mosaic * (hi - lo)
        image = ax.imshow(shown_image, cmap=cmap, vmin=None if colour else (0 if norm_each else lo),
                          vmax=None if colour else (1 if norm_each else hi), interpolation="nearest")
        step = size + gap
        centres = [gap + i * step + size / 2 - 0.5 for i in range(-(-mosaic.shape[0] // step))]
        if per_row:  # rows: filter numbers; columns: channel numbers
            ax.set_yticks(centres[:shown], [str(i) for i in range(shown)], fontsize=7)
            ax.set_xticks([gap + c * step + size / 2 - 0.5 for c in range(ncols)], [str(c) for c in range(ncols)],
                          fontsize=7)
            ax.set_ylabel("filter")
            ax.set_xlabel("input channel")
            ax.xaxis.set_label_position("top")
            ax.xaxis.tick_top()
        else:  # each tile numbered above its top-left corner
            ax.set_xticks([])
            ax.set_yticks([])
            for i in range(shown):
                r, c = divmod(i, ncols)
                ax.text(gap + c * step - 0.5, gap + r * step - 0.7, str(i), fontsize=6, va="bottom", ha="left")
        for side in ax.spines.values():
            side.set_visible(False)
        if title:
            ax.set_title(title, fontsize=9)
    if not colour and not norm_each and image is not None:
        fig.colorbar(image, ax=axes, shrink=min(0.6, 4.0 / fig.get_figheight()), label="weight")
    kind = "colour" if colour else "grey"
    notes.append("each filter on its own range" if norm_each else "one range for all filters")
    title = f"{name} filters ({layer['type']}, {kind}; {'; '.join(notes)})"
    fig.suptitle(textwrap.fill(title, width=max(40, int(fig.get_figwidth() * 11))), fontsize=10)
    return fig


# -- the net on test images ----------------------------------------------------------------------
class _TestBatch:
    """The net of a checkpoint (a test-only Trainer) and the first batch of its test range."""

    def __init__(self, state, run_dir, args):
        from .trainer import Trainer
        given = {key: getattr(args, key) for key in ("data_path", "test_range", "gpu", "layer_params")
                 if getattr(args, key) is not None}
        # finetune=None: a fine-tuned run's options name its source, which must not be re-applied
        op = options.merge(dict(given, test_only=True, multiview_test=False, finetune=None), state["op"])
        self.trainer = Trainer(op, state, run_dir)
        dp = self.trainer.test_dp
        self.label_names = list(dp.label_names)
        self.dims = dp.get_data_dims(0)
        self.mean = dp.mean_column()  # added back before drawing, as cuda-convnet's shownet did
        _, self.batchnum, (self.images, self.labels) = dp.get_next_batch()
        self.labels = self.labels.reshape(-1).astype(np.int64)
        self.rng = np.random.default_rng(op["seed"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.trainer.test_dp.close()

    def class_name(self, k):
        return self.label_names[k] if k < len(self.label_names) else str(k)

    def image(self, case):
        """Test image `case` as (H, W) or (H, W, 3) in [0, 1]."""
        return self.display(self.images[:, case])

    def display(self, column):
        """A data column as (H, W) or (H, W, 3) in [0, 1]: the provider's mean image added back,
        then scaled to the image's own range."""
        channels, h, w = self.dims
        column = np.asarray(column, np.float32)
        if self.mean is not None and self.mean.shape == column.shape:
            column = column + self.mean
        pixels = _normalise(column.reshape(1, channels, h, w), each=True)[0]
        return pixels.transpose(1, 2, 0) if channels == 3 else pixels[0]

    def acts(self, layer, cases):
        """The layer's activations on the given test cases, (rows..., len(cases))."""
        net, mini = self.trainer.net, self.trainer.op["mini"]
        outs = []
        for s in range(0, len(cases), mini):
            chunk = cases[s:s + mini]
            data = np.ascontiguousarray(self.images[:, chunk], np.float32)
            labels = np.ascontiguousarray(self.labels[chunk].reshape(1, -1), np.float32)
            net.fprop([data, labels], False)
            outs.append(net.get_acts(layer["name"]).reshape(-1, len(chunk)))
        acts = np.concatenate(outs, axis=1)
        if "outChannels" in layer:
            return acts.reshape(layer["outChannels"], layer["outSizeY"], layer["outSizeX"], len(cases))
        return acts


def _image_axis(ax, image, title, colour="black", cmap="gray"):
    ax.imshow(image, cmap=cmap if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8, color=colour)


def plot_preds(plt, batch, layer, only_errors):
    """NUM_PREDS random test images of the batch (misclassified ones with only_errors), each
    with its top classes; the title counts the errors over the whole batch."""
    every = batch.acts(layer, np.arange(len(batch.labels)))  # (classes, cases)
    wrong = np.argmax(every, axis=0) != batch.labels
    order = batch.rng.permutation(len(batch.labels))
    if only_errors:
        order = order[wrong[order]]
    if not len(order):
        print(f"shownet: --show-preds: no misclassified image in test batch {batch.batchnum}; nothing drawn")
        return None
    chosen = order[:NUM_PREDS]
    probs = list(every[:, chosen].T)
    pairs = min(4, len(chosen))
    rows = -(-len(chosen) // pairs)
    fig = plt.figure(figsize=(4.2 * pairs, 2.4 * rows))
    grid = fig.add_gridspec(rows, 2 * pairs, width_ratios=[1, 1.4] * pairs, wspace=0.6, hspace=0.5)
    for i, (case, p) in enumerate(zip(chosen, probs)):
        r, c = divmod(i, pairs)
        true = int(batch.labels[case])
        top = np.argsort(-p, kind="stable")[:min(TOP_CLASSES, len(p))]
        right = top[0] == true
        _image_axis(fig.add_subplot(grid[r, 2 * c]), batch.image(case), f"true: {batch.class_name(true)}",
                    "tab:green" if right else "tab:red")
        ax = fig.add_subplot(grid[r, 2 * c + 1])
        ypos = np.arange(len(top))[::-1]
        ax.barh(ypos, p[top], color=["tab:red" if k == true else "tab:blue" for k in top])
        ax.set_yticks(ypos)
        ax.set_yticklabels([batch.class_name(k) for k in top], fontsize=7)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
        if true not in top:
            ax.set_title(f"true class p={p[true]:.3f}", fontsize=7, color="tab:red")
    fig.suptitle(f"{layer['name']} on test batch {batch.batchnum}: {int(wrong.sum())} of {len(wrong)} misclassified "
                 f"(error {wrong.mean():.2%})\n{len(chosen)} {'misclassified ' if only_errors else ''}images at random; "
                 f"true class in red", fontsize=11)
    return fig


def plot_maps(plt, batch, layers, name):
    """The layer's activation maps (one grey mosaic per image) beside NUM_MAP_IMAGES test images."""
    layer = config.output_layer(layers, name)
    shown = f"{name} (after {layer['neuron']})" if layer["name"] != name else name
    cases = np.sort(batch.rng.choice(len(batch.labels), size=min(NUM_MAP_IMAGES, len(batch.labels)), replace=False))
    acts = batch.acts(layer, cases)
    mosaics = []
    for i in range(len(cases)):
        if acts.ndim == 4:
            maps = acts[:MAX_MAPS, :, :, i]
            note = f"{min(len(acts), MAX_MAPS)} of {len(acts)} maps, {acts.shape[1]}x{acts.shape[2]}"
        else:  # a flat layer: its units in a near-square grid
            units = acts[:, i]
            side = math.ceil(math.sqrt(len(units)))
            maps = np.full(side * side, np.nan, np.float32)
            maps[:len(units)] = units
            maps = maps.reshape(1, side, side)
            note = f"{len(units)} units"
        # NaN gaps and padding are drawn blank, apart from every activation value
        mosaics.append(_mosaic(maps, _square_columns(len(maps), *maps.shape[1:]), gap=1, background=np.nan))
    fig, axes = plt.subplots(len(cases), 2, figsize=(9.5, 3.2 * len(cases)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.5]})
    for row, (case, mosaic) in enumerate(zip(cases, mosaics)):
        _image_axis(axes[row, 0], batch.image(case), f"test case {case}: {batch.class_name(int(batch.labels[case]))}")
        lo, hi = float(np.nanmin(mosaic)), float(np.nanmax(mosaic))
        drawn = axes[row, 1].imshow(mosaic, cmap="viridis", vmin=lo, vmax=max(hi, lo + 1e-12), interpolation="nearest")
        axes[row, 1].set_xticks([])
        axes[row, 1].set_yticks([])
        axes[row, 1].set_title(f"{note}; one range per image", fontsize=8)
        fig.colorbar(drawn, ax=axes[row, 1], shrink=0.8, label="activation")
    fig.suptitle(f"{shown} activations", fontsize=10)
    fig.tight_layout()
    return fig


# -- nearest training images -------------------------------------------------------------------------
def plot_similar(plt, batch, name, k, num_queries, search, cache_path):
    """Test images (left) beside their k nearest training images in the layer's feature space,
    green where a neighbour has the query's class; the title gives that share over every test image."""
    from . import retrieval
    trainer = batch.trainer
    train_range = trainer.op["train_range"] or trainer.test_dp.default_batch_range(False)
    train_dp = trainer._provider(train_range, test=True)  # no crops or flips: the images as tested
    try:
        feats = retrieval.cached_features(trainer, name, train_dp, trainer.test_dp, cache_path)
        found = retrieval.neighbours(feats["train"], feats["test"], min(k, len(feats["train"])), search)
        agreement = retrieval.class_agreement(found, feats["train_labels"], feats["test_labels"])
        print(f"shownet: --show-similar={name}: {agreement:.1%} of the {found.shape[1]} nearest training images "
              f"of {len(found)} test images have the test image's class")
        queries = np.sort(batch.rng.choice(len(found), size=min(num_queries, len(found)), replace=False))
        wanted = {}  # training (batch, column) -> image
        for i in found[queries].ravel():
            wanted[tuple(feats["train_pos"][i])] = None
        test_wanted = {tuple(feats["test_pos"][q]): None for q in queries}
        _collect_images(train_dp, wanted, batch)
    finally:
        train_dp.close()
    _collect_images(batch.trainer.test_dp, test_wanted, batch)
    cols = found.shape[1] + 1
    fig, axes = plt.subplots(len(queries), cols, figsize=(1.3 * cols + 0.6, 1.45 * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        true = int(feats["test_labels"][q])
        _image_axis(axes[row, 0], test_wanted[tuple(feats["test_pos"][q])], f"test: {batch.class_name(true)}")
        for j, i in enumerate(found[q]):
            label = int(feats["train_labels"][i])
            _image_axis(axes[row, j + 1], wanted[tuple(feats["train_pos"][i])], batch.class_name(label),
                        "tab:green" if label == true else "tab:red")
    fig.suptitle(f"test images and their nearest training images in {name}'s feature space\n{agreement:.1%} of the "
                 f"{found.shape[1]} neighbours of all {len(found)} test images share their class", fontsize=9)
    fig.tight_layout()
    return fig


def _collect_images(dp, wanted, batch):
    """Fills wanted {(batchnum, column): None} with display images from dp's batches."""
    needed = {b for b, _ in wanted}
    for _ in range(len(dp.batch_range)):
        if not needed:
            break
        _, batchnum, (images, _) = dp.get_next_batch()
        for (b, c) in wanted:
            if b == batchnum:
                wanted[(b, c)] = batch.display(images[:, c])
        needed.discard(batchnum)
