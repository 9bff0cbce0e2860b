"""Make ``mnist_subset.npz``, the small real-MNIST subset the offline demo trains on.

    python ckptsurgery/train/builtin/make_subset.py [MNIST_NPZ] [OUT]

MNIST_NPZ defaults to ``../shared/data/mnist.npz`` (Keras's ``mnist.npz`` layout); OUT to
``mnist_subset.npz`` beside this script. The subset is the first ``N_TRAIN`` training rows and the
first ``N_TEST`` test rows, unchanged, in the same layout. The archive is written with fixed zip
timestamps and deflate level 9, so the same input (and zlib) gives the same bytes; see README.md
beside this script for provenance, licence and the sha256.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import zipfile

import numpy as np

#: Training rows kept: the demo validates on the first 5,000 and trains on the other 6,000.
N_TRAIN = 11000
#: Test rows kept.
N_TEST = 1000

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "mnist.npz"))
DEFAULT_OUT = os.path.join(HERE, "mnist_subset.npz")


def make_subset(source: str, out: str, n_train: int = N_TRAIN, n_test: int = N_TEST) -> str:
    """Write the first ``n_train`` train and ``n_test`` test rows of ``source`` to ``out``.

    Returns:
        The sha256 of the written file.
    """
    with np.load(source, allow_pickle=False) as f:
        arrays = {"x_train": f["x_train"][:n_train], "y_train": f["y_train"][:n_train],
                  "x_test": f["x_test"][:n_test], "y_test": f["y_test"][:n_test]}
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w") as z:
        for key, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            # A fixed timestamp instead of now: the file's bytes, hence its sha256, are reproducible.
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue(), compresslevel=9)
    os.replace(tmp, out)
    with open(out, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SOURCE
    dst = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    digest = make_subset(src, dst)
    print(f"{dst}: {os.path.getsize(dst):,} bytes, sha256 {digest}")
