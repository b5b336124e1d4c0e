"""The layer graph (ccn._core.Net) on tiny nets built from hand-written layer dicts:
a forward pass against float64 NumPy, finite-difference gradients of every layer type
through the graph, the update rule, placement on several logical devices, determinism
and the errors for bad input."""
import math

import numpy as np
import pytest

from ccn import _core
from ccn import config
from oprunner import assert_close

N = 7  # cases per batch: odd, not a multiple of anything


def make_net(layers, devices, seed):
    """A Net with the learning parameters of its dicts set (the engine starts them at 0)."""
    net = _core.Net(layers, devices, seed)
    config.set_learning_params(net, layers, 0.0)
    return net


# ---- layer dicts (the resolved form of docs/layer-dicts.md) --------------------------------------

def learning(n, eps=0.05):
    return dict(epsW=[{"type": "const", "base": eps}] * n, epsB={"type": "const", "base": eps},
                momW=[0.9] * n, momB=0.9, wc=[0.01] * n)


def spatial(layer, c, h, w):
    layer.update(outputs=c * h * w, outChannels=c, outSizeY=h, outSizeX=w)
    return layer


def geometry(src):
    return src["outChannels"], src["outSizeY"], src["outSizeX"]


def data(name, idx, rows=None, chw=None):
    layer = dict(name=name, type="data", inputs=[], dataIdx=idx, gpu=0)
    return spatial(layer, *chw) if chw else dict(layer, outputs=rows)


def conv(name, src, filters, size, padding=0, stride=1, groups=1, shared=True, type="conv", **kw):
    c, h, w = geometry(src)
    my = 1 + math.ceil((2 * padding + h - size) / stride)
    mx = 1 + math.ceil((2 * padding + w - size) / stride)
    layer = dict(name=name, type=type, inputs=[src["name"]], channels=c, imgSizeY=h, imgSizeX=w, filters=filters,
                 filterSize=size, padding=padding, stride=stride, groups=groups, filterChannels=c // groups,
                 modulesY=my, modulesX=mx, partialSum=0, initW=0.3, initB=0.05, **learning(1))
    if type == "conv":
        layer["sharedBiases"] = shared
    layer.update(kw)
    return spatial(layer, filters, my, mx)


def fc(name, srcs, outputs, **kw):
    srcs = srcs if isinstance(srcs, list) else [srcs]
    layer = dict(name=name, type="fc", inputs=[s["name"] for s in srcs], outputs=outputs,
                 initW=[0.3] * len(srcs), initB=0.05, **learning(len(srcs)))
    layer.update(kw)
    return layer


def pool(name, src, kind, size, stride, start=0):
    c, h, w = geometry(src)
    oy = math.ceil((h - start - size) / stride) + 1
    ox = math.ceil((w - start - size) / stride) + 1
    return spatial(dict(name=name, type="pool", inputs=[src["name"]], pool=kind, channels=c, imgSizeY=h, imgSizeX=w,
                        sizeX=size, start=start, stride=stride, outputsY=oy, outputsX=ox), c, oy, ox)


def cmpool(name, src, size, stride, outputs):
    c, h, w = geometry(src)
    return spatial(dict(name=name, type="cmpool", inputs=[src["name"]], channels=c, imgSizeY=h, imgSizeX=w,
                        size=size, start=0, stride=stride, outputChannels=outputs), outputs, h, w)


def norm(name, src, type, size, scale=0.5, pow=0.75, **kw):
    c, h, w = geometry(src)
    return spatial(dict(name=name, type=type, inputs=[src["name"]], channels=c, imgSizeY=h, imgSizeX=w, size=size,
                        scale=scale, pow=pow, minDiv=1.0, **kw), c, h, w)


def same_shape(layer, src):
    if "outChannels" in src:
        return spatial(layer, *geometry(src))
    return dict(layer, outputs=src["outputs"])


def neuron(name, src, kind):
    return same_shape(dict(name=name, type="neuron", inputs=[src["name"]], neuron=kind), src)


def simple(name, type, srcs, **kw):
    srcs = srcs if isinstance(srcs, list) else [srcs]
    return same_shape(dict(name=name, type=type, inputs=[s["name"] for s in srcs], **kw), srcs[0])


def concat(name, srcs):
    return dict(name=name, type="concat", inputs=[s["name"] for s in srcs], outputs=sum(s["outputs"] for s in srcs))


def logreg(name, labels, probs, coeff=1.0, topk=1):
    return dict(name=name, type="cost.logreg", inputs=[labels["name"], probs["name"]], coeff=coeff, topk=topk)


def cost(name, type, srcs, coeff=1.0):
    return dict(name=name, type=type, inputs=[s["name"] for s in srcs], coeff=coeff)


def on(layer, gpu):
    return dict(layer, gpu=gpu)


# ---- data and the objective ----------------------------------------------------------------

def images(rng, chw, n=N):
    return rng.uniform(-1, 1, (int(np.prod(chw)), n)).astype(np.float32)


def labels(rng, classes, n=N):
    return rng.integers(0, classes, (1, n)).astype(np.float32)


def objective(net, layers, batch, counter):
    """The objective (sum of coeff * -cost), with dropout drawing the same numbers each time."""
    net.rng_counter = counter
    net.fprop(batch, True)
    coeffs = {l["name"]: l.get("coeff", 1.0) for l in layers if l["type"].startswith("cost.")}
    return -sum(coeffs[name] * values[0] for name, values in net.costs().items())


def check_gradients(layers, batch, devices=("cpu",), rel_tol=1e-2, h=1e-3):
    """Every weight and bias gradient of the net against central differences of the objective.

    Entries where the one-sided differences disagree sit on a kink or a jump of the objective
    (max pooling switching its winner, maxabs flipping sign) and are left out; they must be few."""
    net = make_net(layers, list(devices), 11)
    counter = 1234
    f0 = objective(net, layers, batch, counter)
    net.bprop()
    checked = 0
    for name in net.weight_layer_names():
        grads, params = net.get_grads(name), net.get_params(name)
        entries = [("weights", i) for i in range(len(params["weights"]))] + [("biases", None)]
        for key, idx in entries:
            analytic = (grads[key] if idx is None else grads[key][idx]).reshape(-1)
            values = (params[key] if idx is None else params[key][idx]).astype(np.float64)
            numeric, smooth = np.zeros(values.size), np.zeros(values.size, bool)
            for flat in range(values.size):
                old = values.flat[flat]
                f = []
                for delta in (h, -h):
                    values.flat[flat] = old + delta
                    _set(net, name, key, idx, values)
                    f.append(objective(net, layers, batch, counter))
                values.flat[flat] = old
                forward, backward = (f[0] - f0) / h, (f0 - f[1]) / h
                numeric[flat] = (forward + backward) / 2
                smooth[flat] = abs(forward - backward) <= 0.2 * (abs(forward) + abs(backward)) + 1e-2
            _set(net, name, key, idx, values)
            what = f"{name}.{key}" + ("" if idx is None else f"[{idx}]")
            assert smooth.mean() >= 0.75, f"{what}: {np.sum(~smooth)} of {smooth.size} entries on kinks"
            num, ana = numeric[smooth], analytic[smooth]
            err = np.linalg.norm(num - ana) / max(np.linalg.norm(num), 1e-6)
            assert err < rel_tol, f"{what}: relative error {err:.3g}\n{num}\n{ana}"
            assert np.linalg.norm(num) > 1e-4, f"{what}: the gradient is ~0, the check proves nothing"
            checked += 1
    return checked


def _set(net, name, key, idx, values):
    values = values.astype(np.float32)
    if idx is None:
        net.set_params(name, {key: values})
    else:
        n = len(net.get_params(name)["weights"])
        net.set_params(name, {key: [values if i == idx else None for i in range(n)]})


# ---- float64 NumPy reference for the forward test ----------------------------------------------

def np_conv(x, w, c, h, wd, size, padding, stride, groups, my, mx):
    n = x.shape[1]
    filters = w.shape[1]
    fc, fg = c // groups, filters // groups
    img = np.zeros((c, padding + max(h + padding, (my - 1) * stride + size),
                    padding + max(wd + padding, (mx - 1) * stride + size), n))
    img[:, padding:padding + h, padding:padding + wd, :] = x.reshape(c, h, wd, n)
    wr = w.reshape(fc, size, size, filters)
    out = np.zeros((filters, my, mx, n))
    for g in range(groups):
        for oy in range(my):
            for ox in range(mx):
                patch = img[g * fc:(g + 1) * fc, oy * stride:oy * stride + size, ox * stride:ox * stride + size]
                out[g * fg:(g + 1) * fg, oy, ox] = np.einsum("abcn,abcf->fn", patch, wr[..., g * fg:(g + 1) * fg])
    return out.reshape(-1, n)


def np_max_pool(x, c, h, w, size, stride, oy_count, ox_count):
    n = x.shape[1]
    img = x.reshape(c, h, w, n)
    out = np.zeros((c, oy_count, ox_count, n))
    for oy in range(oy_count):
        for ox in range(ox_count):
            window = img[:, oy * stride:min(oy * stride + size, h), ox * stride:min(ox * stride + size, w)]
            out[:, oy, ox] = window.max(axis=(1, 2))
    return out.reshape(-1, n)


def test_forward_matches_numpy(rng):
    d = data("data", 0, chw=(3, 7, 6))
    lab = data("labels", 1, rows=1)
    c1 = conv("conv1", d, filters=4, size=3, padding=1, stride=2, groups=1)
    r1 = neuron("relu1", c1, "relu")
    p1 = pool("pool1", r1, "max", size=2, stride=1)
    f1 = fc("fc1", p1, 5)
    sm = simple("probs", "softmax", f1)
    layers = [d, lab, c1, r1, p1, f1, sm, logreg("logprob", lab, sm, topk=2)]
    net = make_net(layers, ["cpu"], 5)
    x, y = images(rng, (3, 7, 6)), labels(rng, 5)
    net.fprop([x, y], False)
    params = {name: net.get_params(name) for name in ("conv1", "fc1")}
    w1, b1 = (p.astype(np.float64) for p in (params["conv1"]["weights"][0], params["conv1"]["biases"]))
    assert w1.shape == (3 * 9, 4) and b1.shape == (4,)
    a = np_conv(x.astype(np.float64), w1, 3, 7, 6, 3, 1, 2, 1, c1["modulesY"], c1["modulesX"])
    a = (a.reshape(4, -1) + b1[:, None]).reshape(a.shape)
    assert_close(net.get_acts("conv1").reshape(a.shape), a, what="conv1")
    a = np.maximum(a, 0)
    a = np_max_pool(a, 4, c1["outSizeY"], c1["outSizeX"], 2, 1, p1["outputsY"], p1["outputsX"])
    assert net.get_acts("pool1").shape == (4, p1["outputsY"], p1["outputsX"], N)
    assert_close(net.get_acts("pool1").reshape(a.shape), a, what="pool1")
    a = params["fc1"]["weights"][0].astype(np.float64).T @ a + params["fc1"]["biases"][:, None]
    assert_close(net.get_acts("fc1"), a, what="fc1")
    p = np.exp(a - a.max(axis=0))
    p /= p.sum(axis=0)
    assert_close(net.get_acts("probs"), p, what="softmax")
    cost, err, err_top2 = net.costs()["logprob"]
    label_idx = y[0].astype(int)
    assert cost == pytest.approx(-np.log(p[label_idx, np.arange(N)]).sum(), rel=1e-5)
    assert err == np.sum(p.argmax(axis=0) != label_idx)
    top2 = np.argsort(-p, axis=0)[:2]
    assert err_top2 == np.sum(~(top2 == label_idx).any(axis=0))


# ---- finite-difference gradients of every layer type through the graph -----------------------------

def conv_net(rng, middle, chw=(2, 6, 5), classes=3):
    """data -> conv -> middle(conv) ... -> fc -> softmax -> logreg; middle returns the layers
    between the conv and the fc (the last one feeds the fc)."""
    d, lab = data("data", 0, chw=chw), data("labels", 1, rows=1)
    c1 = conv("conv1", d, filters=4, size=3, padding=1, stride=1)
    mid = middle(c1)
    f = fc("fc", mid[-1] if mid else c1, classes)
    sm = simple("probs", "softmax", f)
    layers = [d, lab, c1, *mid, f, sm, logreg("logprob", lab, sm)]
    return layers, [images(rng, chw), labels(rng, classes)]


def flat_net(rng, middle, rows=5, classes=3):
    """data -> fc1 -> middle ... -> fc2 -> softmax -> logreg."""
    d, lab = data("data", 0, rows=rows), data("labels", 1, rows=1)
    f1 = fc("fc1", d, 6)
    mid = middle(f1)
    f2 = fc("fc2", mid[-1], classes)
    sm = simple("probs", "softmax", f2)
    layers = [d, lab, f1, *mid, f2, sm, logreg("logprob", lab, sm)]
    return layers, [images(rng, (rows,)), labels(rng, classes)]


CONV_MIDDLES = {
    "conv": lambda c: [neuron("tanh", c, "tanh[1.0,1.0]")],
    "conv_stride_groups_unshared": lambda c: [conv("conv2", c, filters=4, size=2, padding=1, stride=2, groups=2,
                                                   shared=False)],
    "local": lambda c: [conv("local2", c, filters=2, size=3, padding=1, stride=2, type="local")],
    "pool_max": lambda c: [pool("pool", c, "max", size=3, stride=2)],
    "pool_avg": lambda c: [pool("pool", c, "avg", size=3, stride=2, start=-1)],
    "pool_sum": lambda c: [dict(pool("pool", c, "avg", size=3, stride=2, start=-1), sum=True)],
    "pool_maxabs": lambda c: [pool("pool", c, "maxabs", size=2, stride=2)],
    "cmpool": lambda c: [cmpool("cmpool", c, size=2, stride=1, outputs=3)],
    "rnorm": lambda c: [norm("rnorm", c, "rnorm", size=3)],
    "cmrnorm": lambda c: [norm("cmrnorm", c, "cmrnorm", size=3, blocked=False)],
    "cmrnorm_blocked": lambda c: [norm("cmrnorm", c, "cmrnorm", size=2, blocked=True)],
    "cnorm": lambda c: [norm("cnorm", c, "cnorm", size=3)],
}


def _eltsum(f1):
    a, b = neuron("a", f1, "tanh[1.0,1.0]"), neuron("b", f1, "logistic")
    return [a, b, simple("sum", "eltsum", [a, b, f1], coeffs=[0.5, -1.5, 0.25])]


def _eltmax(f1):
    a, b = neuron("a", f1, "tanh[1.0,1.0]"), neuron("b", f1, "linear[-1.0,0.1]")
    return [a, b, simple("max", "eltmax", [a, b, f1])]


def _concat(f1):
    a, b = neuron("a", f1, "abstanh[1.0,1.0]"), neuron("b", f1, "softrelu")
    return [a, b, concat("cat", [a, f1, b])]


def _pass(f1):
    a = neuron("a", f1, "tanh[1.0,1.0]")
    return [a, dict(concat("pass", [a, f1, a]), type="pass")]  # a listed twice: its gradients add


FLAT_MIDDLES = {
    "fc": lambda f1: [neuron("tanh", f1, "tanh[1.7159,0.6666]")],
    "neuron_relu": lambda f1: [neuron("relu", f1, "relu")],
    "neuron_logistic": lambda f1: [neuron("logistic", f1, "logistic")],
    "neuron_softrelu": lambda f1: [neuron("softrelu", f1, "softrelu")],
    "eltsum": _eltsum,
    "eltmax": _eltmax,
    "concat": _concat,
    "dropout": lambda f1: [simple("drop", "dropout", f1, keep=0.6)],
    "dropout2": lambda f1: [simple("drop", "dropout2", f1, keep=0.6)],
    "dropout2_disabled": lambda f1: [simple("drop", "dropout2", f1, keep=0.6, enable=False)],
    "pass": lambda f1: _pass(f1),
    "hs": lambda f1: [simple("hs", "hs", f1, keep=0.7, enable=True)],
}


def test_dropout2_against_dropout_and_numpy(rng):
    """dropout2 = dropout's draws without the 1/keep scaling in training; keep * x at test
    time; enable=False: keep * x in training too. dropout with enable=False is the identity."""
    keep, x = 0.6, rng.uniform(-1, 1, (6, N)).astype(np.float32)

    def acts(kind, train, **kw):
        d = data("data", 0, rows=6)
        drop = simple("drop", kind, d, keep=keep, **kw)
        net = _core.Net([d, drop, cost("c", "cost.sum2", [drop])], ["cpu"], 5)
        net.rng_counter = 99
        net.fprop([x], train)
        return net.get_acts("drop").astype(np.float64)

    inverted = acts("dropout", True)
    kept = inverted != 0
    assert 0.3 < kept.mean() < 0.9
    np.testing.assert_allclose(inverted[kept], x[kept] / keep, rtol=1e-6)
    np.testing.assert_allclose(acts("dropout2", True), np.where(kept, x, 0.0), rtol=1e-6)
    np.testing.assert_allclose(acts("dropout2", False), keep * x, rtol=1e-6)
    np.testing.assert_allclose(acts("dropout2", True, enable=False), keep * x, rtol=1e-6)
    np.testing.assert_allclose(acts("dropout", True, enable=False), x, rtol=1e-6)


@pytest.mark.parametrize("case", sorted(CONV_MIDDLES))
def test_gradients_conv_family(rng, case):
    layers, batch = conv_net(rng, CONV_MIDDLES[case])
    assert check_gradients(layers, batch) >= 4


@pytest.mark.parametrize("case", sorted(FLAT_MIDDLES))
def test_gradients_flat_layers(rng, case):
    layers, batch = flat_net(rng, FLAT_MIDDLES[case])
    assert check_gradients(layers, batch) == 4


def test_gradients_fc_with_several_inputs_and_consumers(rng):
    d1, d2, lab = data("d1", 0, rows=4), data("d2", 2, rows=3), data("labels", 1, rows=1)
    f1 = fc("fc1", [d1, d2], 5)                      # two weight matrices
    t = neuron("t", f1, "tanh[1.0,1.0]")
    f2 = fc("fc2", [t, f1, t], 3)                    # f1 and t each feed several consumers
    sm = simple("probs", "softmax", f2)
    layers = [d1, lab, d2, f1, t, f2, sm, logreg("logprob", lab, sm, coeff=0.7)]
    assert check_gradients(layers, [images(rng, (4,)), labels(rng, 3), images(rng, (3,))]) == 7


def test_gradients_shared_weights(rng):
    """weightSource: the shared matrix's gradient is the sum of both uses."""
    d1, d2, lab = data("d1", 0, rows=4), data("d2", 2, rows=4), data("labels", 1, rows=1)
    fa = fc("fa", d1, 5)
    fb = fc("fb", [d2, d1], 5, weightSource=["fa", "fb[0]"])  # both matrices are fa's
    t = simple("sum", "eltsum", [neuron("ta", fa, "tanh[1.0,1.0]"), fb])
    ta = neuron("ta", fa, "tanh[1.0,1.0]")
    f2 = fc("fc2", t, 3)
    sm = simple("probs", "softmax", f2)
    layers = [d1, lab, d2, fa, fb, ta, t, f2, sm, logreg("logprob", lab, sm)]
    batch = [images(rng, (4,)), labels(rng, 3), images(rng, (4,))]
    assert check_gradients(layers, batch) == 7
    net = make_net(layers, ["cpu"], 3)
    pa, pb = net.get_params("fa"), net.get_params("fb")
    np.testing.assert_array_equal(pa["weights"][0], pb["weights"][0])
    np.testing.assert_array_equal(pa["weights"][0], pb["weights"][1])
    net.set_params("fb", {"weights": [np.full((4, 5), 0.25, np.float32), None]})
    np.testing.assert_array_equal(net.get_params("fa")["weights"][0], 0.25)


def test_gradients_costs(rng):
    """sum2 and crossent, and a softmax that feeds two costs (no fusion) beside a fused one."""
    d, lab, dist = data("data", 0, rows=5), data("labels", 1, rows=1), data("dist", 2, rows=4)
    f1 = fc("fc1", d, 4)
    sm = simple("probs", "softmax", f1)           # feeds logreg and sum2: unfused
    f2 = fc("fc2", d, 4)
    sm2 = simple("probs2", "softmax", f2)          # feeds crossent only: fused
    f3 = fc("fc3", d, 4)
    lg = neuron("lg", f3, "logistic")               # crossent on non-softmax probabilities
    layers = [d, lab, dist, f1, sm, f2, sm2, f3, lg,
              logreg("logprob", lab, sm, coeff=0.5), cost("sq", "cost.sum2", [sm], coeff=0.3),
              cost("xent", "cost.crossent", [dist, sm2], coeff=1.2), cost("xent2", "cost.crossent", [dist, lg]),
              cost("sq2", "cost.sum2", [f3], coeff=0.05)]
    target = rng.uniform(0.1, 1, (4, N))
    batch = [images(rng, (5,)), labels(rng, 4), (target / target.sum(axis=0)).astype(np.float32)]
    assert check_gradients(layers, batch) == 6


@pytest.mark.parametrize("placement", ["two_devices", "two_devices_unfused", "three_devices"])
def test_gradients_across_devices(rng, placement):
    """Activations copied forward and gradients summed back across logical devices: conv1's
    gradient comes from its own device and one or two others, fa's only from another."""
    three = placement == "three_devices"
    d, lab = data("data", 0, chw=(2, 5, 5)), data("labels", 1, rows=1)
    c1 = conv("conv1", d, filters=4, size=3, padding=1)
    a = on(fc("fa", c1, 4), 1)
    b = on(neuron("b", c1, "tanh[1.0,1.0]"), 2 if three else 1)
    fb = on(fc("fb", [b, c1], 4), 0)
    s = on(simple("sum", "eltsum", [a, fb]), 0)
    sm = on(simple("probs", "softmax", s), 1 if placement == "two_devices_unfused" else 0)
    layers = [d, lab, c1, a, b, fb, s, sm, on(logreg("logprob", lab, sm), 0), on(cost("sq", "cost.sum2", [b], 0.1), 1)]
    devices = ["cpu"] * (3 if three else 2)
    assert check_gradients(layers, [images(rng, (2, 5, 5)), labels(rng, 4)], devices=devices) == 7


# ---- the update rule -----------------------------------------------------------------------------

def test_update_rule_matches_numpy(rng):
    layers, batch = flat_net(rng, FLAT_MIDDLES["fc"])
    net = make_net(layers, ["cpu"], 1)
    for name in ("fc1", "fc2"):
        p = net.get_params(name)
        net.set_params(name, {"weightsInc": [rng.standard_normal(w.shape).astype(np.float32) for w in p["weights"]],
                              "biasesInc": rng.standard_normal(p["biases"].shape).astype(np.float32)})
    net.set_learning_params("fc1", [0.3], 0.2, [0.9], 0.8, [0.01])
    net.set_learning_params("fc2", [0.0], 0.1, [0.5], 0.5, [0.02])  # frozen weights, learning biases
    net.fprop(batch, True)
    net.bprop()
    before = {name: net.get_params(name) for name in ("fc1", "fc2")}
    grads = {name: net.get_grads(name) for name in ("fc1", "fc2")}
    net.update(N)
    after = {name: net.get_params(name) for name in ("fc1", "fc2")}

    def expect(w, inc, g, eps, mom, wc):
        new_inc = mom * inc.astype(np.float64) + eps / N * g - wc * eps * w
        return w + new_inc, new_inc

    w, inc = expect(before["fc1"]["weights"][0], before["fc1"]["weightsInc"][0], grads["fc1"]["weights"][0], 0.3, 0.9, 0.01)
    assert_close(after["fc1"]["weights"][0], w, rtol=1e-6, what="fc1 weights")
    assert_close(after["fc1"]["weightsInc"][0], inc, rtol=1e-5, what="fc1 weightsInc")
    b, binc = expect(before["fc1"]["biases"], before["fc1"]["biasesInc"], grads["fc1"]["biases"], 0.2, 0.8, 0.0)
    assert_close(after["fc1"]["biases"], b, rtol=1e-6, what="fc1 biases (no decay)")
    assert_close(after["fc1"]["biasesInc"], binc, rtol=1e-5, what="fc1 biasesInc")
    # eps == 0: no gradient, no change at all
    np.testing.assert_array_equal(grads["fc2"]["weights"][0], 0)
    np.testing.assert_array_equal(after["fc2"]["weights"][0], before["fc2"]["weights"][0])
    np.testing.assert_array_equal(after["fc2"]["weightsInc"][0], before["fc2"]["weightsInc"][0])
    b, _ = expect(before["fc2"]["biases"], before["fc2"]["biasesInc"], grads["fc2"]["biases"], 0.1, 0.5, 0.0)
    assert_close(after["fc2"]["biases"], b, rtol=1e-6, what="fc2 biases")


def test_train_step_is_fprop_bprop_update(rng):
    layers, batch = flat_net(rng, FLAT_MIDDLES["dropout"])
    nets = [make_net(layers, ["cpu"], 9) for _ in range(2)]
    costs = nets[0].train_step(batch)
    nets[1].fprop(batch, True)
    nets[1].bprop()
    nets[1].update(N)
    assert costs == nets[1].costs()
    assert nets[0].rng_counter == nets[1].rng_counter > 0
    for name in ("fc1", "fc2"):
        np.testing.assert_array_equal(nets[0].get_params(name)["weights"][0], nets[1].get_params(name)["weights"][0])


def test_training_lowers_the_cost(rng):
    layers, batch = conv_net(rng, CONV_MIDDLES["pool_max"])
    net = make_net(layers, ["cpu"], 2)
    first = net.train_step(batch)["logprob"][0]
    for _ in range(30):
        last = net.train_step(batch)["logprob"][0]
    assert last < 0.5 * first


# ---- placement and determinism ---------------------------------------------------------------------

def split_net(gpus):
    d, lab = data("data", 0, chw=(3, 6, 6)), data("labels", 1, rows=1)
    c1 = on(conv("conv1", d, filters=4, size=3, padding=1, stride=2), gpus[0])
    a = on(conv("a", c1, filters=4, size=2, padding=0), gpus[1])
    b = on(norm("b", c1, "cmrnorm", size=3), gpus[0])
    pa = on(pool("pa", a, "avg", size=2, stride=1), gpus[1])
    fa = on(fc("fa", pa, 6), gpus[1])
    fb = on(fc("fb", [b, c1], 6), gpus[0])
    drop = on(simple("drop", "dropout", fb, keep=0.7), gpus[0])
    cat = on(concat("cat", [fa, drop]), gpus[1])
    f = on(fc("f", [cat, fb], 4), gpus[0])
    sm = on(simple("probs", "softmax", f), gpus[1])
    return [d, lab, c1, a, b, pa, fa, fb, drop, cat, f, sm, on(logreg("logprob", lab, sm), gpus[0]),
            on(cost("sq", "cost.sum2", [fa], 0.01), gpus[1])]


def run_training(layers, devices, batches, seed=4):
    net = make_net(layers, devices, seed)
    costs = [net.train_step(b) for b in batches]
    return net, costs


def make_batches(rng, count=3):
    return [[images(rng, (3, 6, 6), n), labels(rng, 4, n)] for n in (N, N, 5)[:count]]


def test_split_across_devices_matches_one_device(rng, device):
    batches = make_batches(rng)
    one, costs1 = run_training(split_net([0, 0]), [device], batches)
    two, costs2 = run_training(split_net([0, 1]), [device, device], batches)
    for c1, c2 in zip(costs1, costs2):
        for name in c1:
            np.testing.assert_allclose(c2[name], c1[name], rtol=1e-5)
    for name in one.weight_layer_names():
        p1, p2 = one.get_params(name), two.get_params(name)
        for w1, w2 in zip(p1["weights"] + [p1["biases"]], p2["weights"] + [p2["biases"]]):
            assert_close(w2, w1, rtol=1e-5, what=name)
    for name in one.layer_names():
        if not name.startswith(("logprob", "sq")):
            assert_close(two.get_acts(name), one.get_acts(name), rtol=1e-5, what=name)


@pytest.mark.parametrize("devices", [["cpu"], ["cpu", "cpu"]])
def test_cpu_runs_are_bit_for_bit_repeatable(rng, devices):
    batches = make_batches(rng)
    layers = split_net([0, len(devices) - 1])
    (n1, c1), (n2, c2) = run_training(layers, devices, batches), run_training(layers, devices, batches)
    assert c1 == c2
    for name in n1.weight_layer_names():
        for key in ("weights", "weightsInc"):
            for a, b in zip(n1.get_params(name)[key], n2.get_params(name)[key]):
                np.testing.assert_array_equal(a, b)
    assert n1.rng_counter == n2.rng_counter


def test_buffers_are_reused_across_batches(rng):
    batches = make_batches(rng, 2)
    net = make_net(split_net([0, 1]), ["cpu", "cpu"], 4)
    for _ in range(2):
        net.train_step(batches[0])
    in_use = _core.allocator_stats("cpu")["bytes_in_use"]
    for _ in range(3):
        net.train_step(batches[0])
    assert _core.allocator_stats("cpu")["bytes_in_use"] == in_use


def test_rng_counter_replays_dropout(rng):
    layers, batch = flat_net(rng, FLAT_MIDDLES["dropout"])
    net = make_net(layers, ["cpu"], 3)
    net.rng_counter = 100
    net.fprop(batch, True)
    first = net.get_acts("drop")
    assert net.rng_counter == 100 + first.size
    net.fprop(batch, True)
    assert not np.array_equal(net.get_acts("drop"), first)
    net.rng_counter = 100
    net.fprop(batch, True)
    np.testing.assert_array_equal(net.get_acts("drop"), first)
    kept = first != 0
    assert 0 < kept.mean() < 1
    fc1 = net.get_acts("fc1")
    assert_close(first[kept], fc1[kept] / 0.6, what="kept activations scaled by 1/keep")
    net.fprop(batch, False)  # test mode: identity, no numbers drawn
    np.testing.assert_array_equal(net.get_acts("drop"), net.get_acts("fc1"))
    assert net.rng_counter == 100 + first.size


def test_batch_size_changes_and_acts_shapes(rng):
    layers, _ = conv_net(rng, CONV_MIDDLES["pool_avg"])
    net = make_net(layers, ["cpu"], 0)
    for n in (5, 9, 5):
        net.fprop([images(rng, (2, 6, 5), n), labels(rng, 3, n)], False)
        assert net.get_acts("conv1").shape == (4, 6, 5, n)
        assert net.get_acts("fc").shape == (3, n)
    assert net.layer_names() == [l["name"] for l in layers]
    assert net.weight_layer_names() == ["conv1", "fc"]
    assert net.check_finite() is None
    w = net.get_params("fc")["weights"][0]
    w[0, 0] = np.nan
    net.set_params("fc", {"weights": [w]})
    assert net.check_finite() == "the weights of layer 'fc'"


def test_layer_params_can_be_reset(rng):
    layers, batch = flat_net(rng, FLAT_MIDDLES["dropout"])
    net = make_net(layers, ["cpu"], 3)
    net.fprop(batch, False)
    cost = net.costs()["logprob"][0]
    net.set_layer_param("logprob", "coeff", 2.0)
    net.set_layer_param("drop", "keep", 0.5)
    net.fprop(batch, False)
    assert net.costs()["logprob"][0] == cost  # costs are reported without coeff
    with pytest.raises(ValueError, match="keep"):
        net.set_layer_param("drop", "keep", 1.5)
    with pytest.raises(ValueError, match="'fc1'.*'coeff'"):
        net.set_layer_param("fc1", "coeff", 1.0)


# ---- errors -------------------------------------------------------------------------------------------

def test_errors_name_the_layer_and_key(rng):
    layers, batch = conv_net(rng, CONV_MIDDLES["pool_max"])
    broken = [dict(l) for l in layers]
    del broken[2]["filterSize"]
    with pytest.raises(ValueError, match="layer 'conv1': missing key 'filterSize'"):
        make_net(broken, ["cpu"], 0)
    broken = [dict(l) for l in layers]
    broken[2]["stride"] = "2"
    with pytest.raises(ValueError, match="layer 'conv1': key 'stride': must be an int, got str"):
        make_net(broken, ["cpu"], 0)
    broken = [dict(l) for l in layers]
    broken[3]["inputs"] = ["conv1", "labels"]
    with pytest.raises(ValueError, match="layer 'pool' \\(pool\\): takes exactly 1 input, got 2"):
        make_net(broken, ["cpu"], 0)
    broken = [dict(l) for l in layers]
    broken[2].update(inputs=["data", "labels"], epsW=broken[2]["epsW"] * 2, momW=[0.9] * 2, wc=[0.0] * 2)
    with pytest.raises(ValueError, match="layer 'conv1' \\(conv\\): input 'labels' has 1 outputs but channels \\* imgSizeY"):
        make_net(broken, ["cpu"], 0)
    broken = [dict(l) for l in layers]
    broken[3]["type"] = "poool"
    with pytest.raises(ValueError, match="layer 'pool': key 'type': unknown layer type 'poool'"):
        make_net(broken, ["cpu"], 0)
    broken = [dict(l) for l in layers]
    broken[4]["inputs"] = ["nothing"]
    with pytest.raises(ValueError, match="layer 'fc': input 'nothing'"):
        make_net(broken, ["cpu"], 0)
    broken = [dict(l) for l in layers]
    broken[2]["outputs"] += 1
    with pytest.raises(ValueError, match="layer 'conv1'"):
        make_net(broken, ["cpu"], 0)
    with pytest.raises(ValueError, match="layer 'fc': key 'gpu'.*out of range"):
        make_net([dict(l, gpu=1) if l["name"] == "fc" else l for l in layers], ["cpu"], 0)
    with pytest.raises(ValueError, match="bad device"):
        make_net(layers, ["gpu0"], 0)


def test_weight_source_errors(rng):
    d = data("data", 0, rows=4)
    fa, fb = fc("fa", d, 5), fc("fb", d, 6, weightSource=["fa"])
    with pytest.raises(ValueError, match="layer 'fb': weightSource 'fa' has weights of shape"):
        make_net([d, fa, fb], ["cpu"], 0)
    fb = on(fc("fb", d, 5, weightSource=["fa"]), 1)
    with pytest.raises(ValueError, match="across devices"):
        make_net([d, fa, fb], ["cpu", "cpu"], 0)
    fb = fc("fb", d, 5, weightSource=["fc9"])
    with pytest.raises(ValueError, match="weightSource 'fc9'"):
        make_net([d, fa, fb], ["cpu"], 0)
    fa, fb = fc("fa", d, 5, weightSource=["fb"]), fc("fb", d, 5, weightSource=["fa"])
    with pytest.raises(ValueError, match="cycle"):
        make_net([d, fa, fb], ["cpu"], 0)
    # a source later in the list is fine
    net = make_net([d, fc("fa", d, 5, weightSource=["fb"]), fc("fb", d, 5)], ["cpu"], 0)
    np.testing.assert_array_equal(net.get_params("fa")["weights"][0], net.get_params("fb")["weights"][0])


def test_data_errors_name_the_data_index(rng):
    layers, (x, y) = conv_net(rng, CONV_MIDDLES["pool_max"])
    net = make_net(layers, ["cpu"], 0)
    with pytest.raises(ValueError, match=r"data\[1\] must have shape \(1, numCases\) for data layer 'labels'"):
        net.fprop([x, np.zeros((3, N), np.float32)], False)
    with pytest.raises(ValueError, match=r"data\[1\] has 6 cases"):
        net.fprop([x, y[:, :6].copy()], False)
    with pytest.raises(ValueError, match=r"data\[1\]"):
        net.fprop([x], False)
    with pytest.raises(TypeError, match=r"data\[0\]"):
        net.fprop([x.astype(np.float64), y], False)
    with pytest.raises(ValueError, match="bprop"):
        net.bprop()
    rows = layers[3]["outputs"]
    with pytest.raises(ValueError, match=rf"layer 'fc': 'weights\[0\]' must have shape \({rows}, 3\)"):
        net.set_params("fc", {"weights": [np.zeros((3, rows), np.float32)]})
    with pytest.raises(ValueError, match="layer 'pool'.*no weights"):
        net.get_params("pool")
    with pytest.raises(ValueError, match="no layer named 'x'"):
        net.get_acts("x")
    with pytest.raises(ValueError, match="epsW"):
        net.set_learning_params("fc", [0.1, 0.1], 0.1, [0.9], 0.9, [0.0])


# ---- conv and local with several inputs (cuda-convnet's form) ------------------------------------

def multi_conv(name, srcs, filters, sizes, paddings, strides, groups, type="conv"):
    """A conv/local layer over several inputs: per-input lists, one filters count, one bias."""
    geo = [geometry(s) for s in srcs]
    my = 1 + math.ceil((2 * paddings[0] + geo[0][1] - sizes[0]) / strides[0])
    mx = 1 + math.ceil((2 * paddings[0] + geo[0][2] - sizes[0]) / strides[0])
    layer = dict(name=name, type=type, inputs=[s["name"] for s in srcs], channels=[g[0] for g in geo],
                 imgSizeY=[g[1] for g in geo], imgSizeX=[g[2] for g in geo], filters=filters, filterSize=sizes,
                 padding=paddings, stride=strides, groups=groups,
                 filterChannels=[g[0] // k for g, k in zip(geo, groups)], modulesY=my, modulesX=mx, partialSum=0,
                 initW=[0.3] * len(srcs), initB=0.05, **learning(len(srcs)))
    if type == "conv":
        layer["sharedBiases"] = True
    return spatial(layer, filters, my, mx)


def two_input_net(rng, type="conv"):
    a, b, lab = data("a", 0, chw=(2, 6, 6)), data("b", 2, chw=(4, 8, 8)), data("labels", 1, rows=1)
    # a: 3x3 pad 1 stride 1 -> 6x6; b: 3x3 pad 0 stride 1 -> 6x6, in 2 groups
    c = multi_conv("conv", [a, b], filters=4, sizes=[3, 3], paddings=[1, 0], strides=[1, 1], groups=[1, 2], type=type)
    t = neuron("t", c, "tanh[1.0,1.0]")
    f = fc("fc", t, 3)
    sm = simple("probs", "softmax", f)
    layers = [a, lab, b, c, t, f, sm, logreg("logprob", lab, sm)]
    return layers, [images(rng, (2, 6, 6)), labels(rng, 3), images(rng, (4, 8, 8))]


@pytest.mark.parametrize("type", ["conv", "local"])
def test_multi_input_conv_is_the_sum_of_single_input_convs(rng, type):
    layers, batch = two_input_net(rng, type)
    net = _core.Net(layers, ["cpu"], 3)
    net.fprop(batch, False)
    both = net.get_acts("conv").astype(np.float64).reshape(-1, N)
    params = net.get_params("conv")
    singles = []
    for i, src in enumerate(["a", "b"]):
        c = layers[3]
        single = dict(c, inputs=[src], **{k: c[k][i] for k in ("channels", "imgSizeY", "imgSizeX", "filterSize",
                                                                "padding", "stride", "groups", "filterChannels")},
                      initW=0.3, **learning(1))
        d = dict(next(l for l in layers if l["name"] == src), dataIdx=0)
        lone = _core.Net([d, single, cost("c", "cost.sum2", [single])], ["cpu"], 3)
        lone.set_params("conv", {"weights": [params["weights"][i]], "biases": np.zeros_like(params["biases"])})
        lone.fprop([batch[0] if src == "a" else batch[2]], False)
        singles.append(lone.get_acts("conv").astype(np.float64).reshape(-1, N))
    bias = params["biases"].astype(np.float64).reshape(-1, 1)
    per_row = np.repeat(bias, layers[3]["modulesY"] * layers[3]["modulesX"], axis=0) if type == "conv" else bias
    np.testing.assert_allclose(both, singles[0] + singles[1] + per_row, rtol=1e-5, atol=1e-5)
    assert np.abs(singles[0]).max() > 0.1 and np.abs(singles[1]).max() > 0.1


@pytest.mark.parametrize("type", ["conv", "local"])
def test_gradients_multi_input_conv(rng, type):
    layers, batch = two_input_net(rng, type)
    assert check_gradients(layers, batch) == 5  # conv: 2 weight matrices + bias; fc: weights + bias


# ---- sparse filter-channel connectivity (randSparse) ----------------------------------------

def sparse_net(rng, conns, type="conv"):
    """data -> conv1 (dense) -> sparse conv2 over conv1's 4 maps, 2 groups of 2 channels each
    drawn by conns -> fc -> softmax -> logreg."""
    d, lab = data("data", 0, chw=(2, 5, 5)), data("labels", 1, rows=1)
    c1 = conv("conv1", d, filters=4, size=3, padding=1)
    c2 = conv("conv2", c1, filters=4, size=3, padding=1, groups=2, type=type)
    c2.update(filterChannels=len(conns) // 2, filterConns=[conns])
    f = fc("fc", c2, 3)
    sm = simple("probs", "softmax", f)
    return [d, lab, c1, c2, f, sm, logreg("logprob", lab, sm)], [images(rng, (2, 5, 5)), labels(rng, 3)]


@pytest.mark.parametrize("type", ["conv", "local"])
def test_sparse_conv_equals_dense_conv_on_the_gathered_channels(rng, type):
    conns = [3, 1, 0, 2, 2, 3, 1, 0]  # two permutations of the 4 channels: 2 groups of 4 channels
    layers, batch = sparse_net(rng, conns, type)
    net = make_net(layers, ["cpu"], 3)
    net.fprop(batch, False)
    x = net.get_acts("conv1").astype(np.float64)  # (4, 5, 5, N)
    sparse_out = net.get_acts("conv2").astype(np.float64)
    params = net.get_params("conv2")
    # independent path: the gathered image in NumPy, through a dense grouped conv
    gathered = x[conns].astype(np.float32)
    g = data("g", 0, chw=(8, 5, 5))
    dense = conv("conv2", g, filters=4, size=3, padding=1, groups=2, type=type)
    lone = make_net([g, dense, cost("c", "cost.sum2", [dense])], ["cpu"], 3)
    lone.set_params("conv2", {"weights": params["weights"], "biases": params["biases"]})
    lone.fprop([gathered.reshape(8 * 25, N)], False)
    np.testing.assert_allclose(sparse_out, lone.get_acts("conv2"), rtol=1e-5, atol=1e-6)


def test_gradients_sparse_conv(rng):
    # conv1's weight gradients pass through the scatter of conv2's input gradient
    layers, batch = sparse_net(rng, [3, 1, 0, 2, 2, 3, 1, 0])
    assert check_gradients(layers, batch) == 6


# ---- image layers of the 2012 release: href, blur, nailbed --------------------------------------

def _image_layer(name, src, type, **kw):
    c, h, w = geometry(src)
    layer = dict(name=name, type=type, inputs=[src["name"]], channels=c, imgSizeY=h, imgSizeX=w, **kw)
    if type == "nailbed":
        oy, ox = -(-h // kw["stride"]), -(-w // kw["stride"])
        return spatial(layer, c, oy, ox)
    return spatial(layer, c, h, w)


def _blur_taps(size, stdev):
    taps = np.exp(-((size // 2 - np.arange(size)) ** 2) / (2 * stdev ** 2))
    return list(taps / taps.sum())


IMAGE_LAYERS = {
    "href": dict(),
    "blur": dict(filterSize=3, stdev=0.8, filter=_blur_taps(3, 0.8)),
    "nailbed": dict(stride=2, start=0, outputsY=3, outputsX=3),
}


def _np_image_layer(type, x, **kw):
    """float64 NumPy reference on images (C, H, W, N)."""
    if type == "href":
        return x[:, :, ::-1, :]
    if type == "nailbed":
        s, st = kw["start"], kw["stride"]
        return x[:, s::st, s::st, :]
    taps = np.asarray(kw["filter"])
    r = len(taps) // 2
    pad = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    h, w = x.shape[1:3]
    rows = sum(taps[k] * pad[:, :, k:k + w, :] for k in range(len(taps)))[:, r:r + h]  # along x
    rows = np.pad(rows, ((0, 0), (r, r), (0, 0), (0, 0)))
    return sum(taps[k] * rows[:, k:k + h, :, :] for k in range(len(taps)))  # then along y


@pytest.mark.parametrize("type", sorted(IMAGE_LAYERS))
def test_image_layers_match_numpy(rng, type):
    d = data("data", 0, chw=(3, 5, 5))
    layer = _image_layer("img", d, type, **IMAGE_LAYERS[type])
    net = make_net([d, layer, cost("c", "cost.sum2", [layer])], ["cpu"], 0)
    x = images(rng, (3, 5, 5))
    net.fprop([x], False)
    expected = _np_image_layer(type, x.astype(np.float64).reshape(3, 5, 5, N), **IMAGE_LAYERS[type])
    np.testing.assert_allclose(net.get_acts("img"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("type", sorted(IMAGE_LAYERS))
def test_gradients_image_layers(rng, type):
    # conv1's gradients pass back through the layer (after it, a conv reads its output)
    kw = IMAGE_LAYERS[type]
    d, lab = data("data", 0, chw=(2, 5, 5)), data("labels", 1, rows=1)
    c1 = conv("conv1", d, filters=3, size=3, padding=1)
    img = _image_layer("img", c1, type, **kw)
    f = fc("fc", img, 3)
    sm = simple("probs", "softmax", f)
    layers = [d, lab, c1, img, f, sm, logreg("logprob", lab, sm)]
    assert check_gradients(layers, [images(rng, (2, 5, 5)), labels(rng, 3)]) == 4


# ---- element-wise costs of the 2012 release: cost.crossent2, cost.rflickr ------------------------

def _element_cost_net(rng, kind):
    d, t = data("data", 0, rows=5), data("targets", 1, rows=4)
    f = fc("fc", d, 4)
    y = neuron("y", f, "logistic")
    layers = [d, t, f, y, cost("cost", kind, [t, y], coeff=0.7)]
    targets = (rng.random((4, N)) < 0.5).astype(np.float32)
    return layers, [images(rng, (5,)), targets]


def _np_element_cost(kind, t, y):
    if kind == "cost.crossent2":
        return -np.sum(t * np.log(y) + (1 - t) * np.log(1 - y))
    return np.sum(np.log1p((y - t) ** 2))


@pytest.mark.parametrize("kind", ["cost.crossent2", "cost.rflickr"])
def test_element_costs_match_numpy(rng, kind):
    layers, batch = _element_cost_net(rng, kind)
    net = make_net(layers, ["cpu"], 0)
    net.fprop(batch, False)
    y = net.get_acts("y").astype(np.float64)
    assert net.costs()["cost"][0] == pytest.approx(_np_element_cost(kind, batch[1].astype(np.float64), y), rel=1e-5)


@pytest.mark.parametrize("kind", ["cost.crossent2", "cost.rflickr"])
def test_gradients_element_costs(rng, kind):
    layers, batch = _element_cost_net(rng, kind)
    assert check_gradients(layers, batch) == 2


def test_crossent2_through_a_saturated_logistic_stays_exact(rng):
    """A logistic neuron feeding only cost.crossent2 takes coeff * (t - y) as its input's
    gradient (fused), finite where y has saturated to exactly 0 or 1."""
    layers, batch = _element_cost_net(rng, "cost.crossent2")
    net = make_net(layers, ["cpu"], 0)
    w = net.get_params("fc")["weights"][0]
    net.set_params("fc", {"weights": [(rng.standard_normal(w.shape) * 60).astype(np.float32)]})
    net.fprop(batch, True)
    net.bprop()
    y = net.get_acts("y").astype(np.float64)
    assert np.any(y == 1.0) and np.any(y == 0.0)  # saturated in float32
    assert np.isfinite(net.costs()["cost"][0])
    g = 0.7 * (batch[1].astype(np.float64) - y)
    expected = batch[0].astype(np.float64) @ g.T
    assert_close(net.get_grads("fc")["weights"][0], expected, rtol=1e-5, what="fc weight gradient")


def test_sum_pooling_matches_numpy(rng):
    """avg pooling with sum=True (cuda-convnet2): each window's sum over its in-image pixels."""
    d = data("data", 0, chw=(2, 6, 5))
    p = dict(pool("pool", d, "avg", size=3, stride=2, start=-1), sum=True)
    net = make_net([d, p, cost("c", "cost.sum2", [p])], ["cpu"], 0)
    x = images(rng, (2, 6, 5))
    net.fprop([x], False)
    img = x.astype(np.float64).reshape(2, 6, 5, N)
    expected = np.zeros((2, p["outputsY"], p["outputsX"], N))
    for oy in range(p["outputsY"]):
        for ox in range(p["outputsX"]):
            y0, x0 = max(-1 + 2 * oy, 0), max(-1 + 2 * ox, 0)
            expected[:, oy, ox] = img[:, y0:-1 + 2 * oy + 3, x0:-1 + 2 * ox + 3].sum(axis=(1, 2))
    np.testing.assert_allclose(net.get_acts("pool"), expected, rtol=1e-5, atol=1e-5)
