#!/usr/bin/env python3
"""Train a convolutional net from cuda-convnet layer files:

    python convnet.py --layer-def=layers.cfg --layer-params=layer-params.cfg
    python convnet.py -f runs/ConvNet__<date>          # resume
    python convnet.py -f runs/... --test-only=1 --multiview-test=1
"""
import sys

from ccn.cli import convnet_main

if __name__ == "__main__":
    sys.exit(convnet_main())
