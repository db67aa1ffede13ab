"""MNIST: the bundled files, the tutorial split, clear errors for bad files, the download
path (against a local HTTP server; no test needs the internet) and the batch iterator."""

import gzip
import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from scratchnet.data import BatchIterator, DataError, iterate_batches, load_mnist, one_hot, read_idx, summary_text
from scratchnet.data import download_file
from scratchnet.data.mnist import BUNDLED, MNIST_FILES

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(">u1" if code == 0x08 else array.dtype).tobytes()


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_bundled_mnist_sizes_counts_and_pixels(mnist):
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (55000, 5000, 10000)
    full = np.concatenate([mnist.validation.labels, mnist.train.labels])
    assert np.bincount(full).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.test.labels).tolist() == TEST_COUNTS
    x = mnist.train.images
    assert x.shape == (55000, 28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == 1
    assert mnist.train.labels.dtype == np.int64
    assert not x.flags.writeable


def test_validation_is_the_first_5000_training_images(mnist):
    raw = read_idx(BUNDLED / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(mnist.validation.images[..., 0], raw[:5000].astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_array_equal(mnist.train.images[0, ..., 0], raw[5000].astype(np.float32) * np.float32(1 / 255))


def test_summary_text_reports_checksums_and_counts():
    text = summary_text()
    assert text.count("sha256 OK") == 4
    assert "55000" in text and "5000" in text and "10000" in text
    assert " ".join(f"{c:>5}" for c in TEST_COUNTS) in text


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize("mangle,message", [
    (lambda b: b[:-10], "truncated"),
    (lambda b: b + b"\0\0", "trailing bytes"),
    (lambda b: b"\x01" + b[1:], "wrong magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "type code"),
    (lambda b: b[:3], "truncated"),
])
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, mangle, message):
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mangle(good))
    with pytest.raises(DataError, match=message) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_idx_reads_raw_and_gzip_alike(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "raw").write_bytes(idx_bytes(a))
    (tmp_path / "zipped.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "raw"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped.gz"), a)
    (tmp_path / "broken.gz").write_bytes(gzip.compress(idx_bytes(a))[:-8])
    with pytest.raises(DataError, match="broken.gz.*corrupt gzip"):
        read_idx(tmp_path / "broken.gz")


def copy_mnist(folder, replace=None):
    folder.mkdir()
    for name in MNIST_FILES:
        data = (BUNDLED / f"{name}.gz").read_bytes()
        (folder / f"{name}.gz").write_bytes(replace(name, data) if replace else data)
    return folder


def test_data_dir_override_checksum_and_count_mismatch(tmp_path, monkeypatch):
    def corrupt(name, data):  # change one pixel, keep the file well-formed
        if name != "t10k-images-idx3-ubyte":
            return data
        raw = bytearray(gzip.decompress(data))
        raw[1000] ^= 0xFF
        return gzip.compress(bytes(raw))

    folder = copy_mnist(tmp_path / "elsewhere", corrupt)
    monkeypatch.setenv("SCRATCHNET_DATA_DIR", str(folder))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: checksum mismatch"):
        load_mnist()
    with pytest.raises(DataError, match="missing MNIST files"):
        load_mnist(tmp_path / "empty")
    assert load_mnist(folder, verify=False).source == folder.resolve()

    def drop_a_label(name, data):
        if name != "t10k-labels-idx1-ubyte":
            return data
        labels = read_idx(BUNDLED / f"{name}.gz")[:-1]
        return gzip.compress(idx_bytes(labels, 0x08))

    short = copy_mnist(tmp_path / "short", drop_a_label)
    with pytest.raises(DataError, match="10000 images but t10k-labels-idx1-ubyte has 9999 labels"):
        load_mnist(short, verify=False)


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (base URL, folder)."""
    root = tmp_path / "www"
    (root / "mirror2").mkdir(parents=True)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_download_tries_mirrors_and_verifies(http_server, tmp_path):
    base, root = http_server
    content = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
    (root / "mirror2" / "tiny-idx3-ubyte.gz").write_bytes(gzip.compress(content))
    sha = hashlib.sha256(content).hexdigest()
    cache = tmp_path / "cache"
    mirrors = [f"{base}/mirror1/", f"{base}/mirror2/"]  # the first one 404s
    path = download_file("tiny-idx3-ubyte", cache, mirrors, sha)
    assert path == cache / "tiny-idx3-ubyte.gz"
    np.testing.assert_array_equal(read_idx(path), np.arange(12).reshape(3, 2, 2))

    with pytest.raises(DataError, match="checksum mismatch") as e:
        download_file("tiny-idx3-ubyte", tmp_path / "cache2", mirrors, "0" * 64)
    assert "mirror1" in str(e.value) and "404" in str(e.value)
    assert list((tmp_path / "cache2").iterdir()) == []  # nothing half-written is left


def test_missing_bundle_downloads_into_the_cache(http_server, tmp_path, monkeypatch):
    base, root = http_server
    for name in MNIST_FILES:
        (root / "mirror2" / f"{name}.gz").write_bytes((BUNDLED / f"{name}.gz").read_bytes())
    monkeypatch.setattr("scratchnet.data.mnist.BUNDLED", tmp_path / "no-bundle")
    monkeypatch.setenv("SCRATCHNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCRATCHNET_MNIST_MIRRORS", f"{base}/mirror2/")
    monkeypatch.delenv("SCRATCHNET_DATA_DIR", raising=False)
    m = load_mnist()
    assert m.source == (tmp_path / "cache").resolve() and len(m.test) == 10000


def test_batches_follow_tf_next_batch_across_epochs():
    x, y = np.arange(10)[:, None].astype(np.float32), np.arange(10)
    it = BatchIterator(x, y, 4, seed=0)
    first_epoch = it.order.copy()
    b1, b2, b3 = (it.next_batch()[1] for _ in range(3))
    np.testing.assert_array_equal(np.concatenate([b1, b2]), first_epoch[:8])
    np.testing.assert_array_equal(b3[:2], first_epoch[8:])       # the old epoch's remainder ...
    np.testing.assert_array_equal(b3[2:], it.order[:2])          # ... then the new epoch's head
    assert it.epochs_completed == 1 and sorted(it.order) == list(range(10))
    assert not np.array_equal(it.order, first_epoch)


def test_batch_iterator_resumes_exactly():
    x, y = np.arange(50)[:, None].astype(np.float32), np.arange(50)
    straight = BatchIterator(x, y, 7, seed=5)
    expected = [straight.next_batch()[1] for _ in range(20)]
    first = BatchIterator(x, y, 7, seed=5)
    got = [first.next_batch()[1] for _ in range(9)]
    resumed = BatchIterator(x, y, 7, seed=123)
    resumed.load_state(first.state())
    got += [resumed.next_batch()[1] for _ in range(11)]
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_iterate_batches_is_bounded_and_in_order():
    x, y = np.arange(25)[:, None], np.arange(25)
    sizes = [len(b[1]) for b in iterate_batches(x, y, 10)]
    assert sizes == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in iterate_batches(x, y, 10)]), y)
