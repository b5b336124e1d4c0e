#!/usr/bin/env python3
"""Plots of a trained net (cuda-convnet's shownet.py), written as PNG files:

    python shownet.py -f runs/ConvNet__<date> --show-cost=logprob --cost-idx=1 --out=plots/
    python shownet.py -f runs/... --show-filters=conv1
    python shownet.py -f runs/... --show-preds=probs --only-errors
    python shownet.py -f runs/... --show-maps=conv2
"""
import sys

from ccn.cli import shownet_main

if __name__ == "__main__":
    sys.exit(shownet_main())
