import numpy as np
from safetensors.numpy import load_file

from interp.core.tensorfile import RowWriter


def test_rows_written_in_any_order_give_a_standard_safetensors_file(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 3, 5)).astype(np.float32)
    idx = np.arange(8, dtype=np.int64)
    w = RowWriter(
        tmp_path / "x.safetensors",
        {"a": (np.float32, a.shape), "i": (np.int64, (8,))},
        {"format": "pt"},
    )
    for r in [6, 0, 3, 1, 5, 2, 4]:
        w.write_rows("a", r, a[r : r + 1])
    w.write_rows("i", 0, idx)
    assert not (tmp_path / "x.safetensors").exists()  # only the .partial until finished
    w.finish()
    back = load_file(str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(back["a"], a)
    np.testing.assert_array_equal(back["i"], idx)
    assert not (tmp_path / "x.safetensors.partial").exists()


def test_resume_keeps_rows_written_before(tmp_path):
    spec = {"a": (np.float32, (4, 2))}
    w = RowWriter(tmp_path / "y.safetensors", spec)
    w.write_rows("a", 0, np.ones((2, 2), np.float32))
    w.flush()
    w.close()
    w2 = RowWriter(tmp_path / "y.safetensors", spec, resume=True)
    assert w2.resumed
    w2.write_rows("a", 2, np.full((2, 2), 2, np.float32))
    w2.finish()
    np.testing.assert_array_equal(
        load_file(str(tmp_path / "y.safetensors"))["a"][:, 0], [1, 1, 2, 2]
    )
