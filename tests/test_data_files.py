"""Data sets read from local files: tiny fake files in each standard format, and clear errors when files are
missing or malformed."""
import pickle

import numpy as np
import pytest
import torch

from mn.data import UCI_SETS, DataFormatError, load_dataset, prepare


def _cifar_pickle(path, n, labels, seed=0):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    for key, count in labels.items():
        batch[key.encode()] = list(rng.integers(0, count, n))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def make_cifar10(root, n=4):
    for i in range(1, 6):
        _cifar_pickle(root / "cifar-10-batches-py" / f"data_batch_{i}", n, {"labels": 10}, seed=i)
    _cifar_pickle(root / "cifar-10-batches-py" / "test_batch", n, {"labels": 10}, seed=9)


def _png(path, size, color):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)


def make_tiny_imagenet(root, wnids=("n01", "n02")):
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for i, w in enumerate(wnids):
        for k in range(2):
            _png(folder / "train" / w / "images" / f"{w}_{k}.JPEG", 64, (40 * i, 100, 7 * k))
        _png(folder / "val" / "images" / f"val_{i}.JPEG", 64, (40 * i, 0, 0))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def write_uci(root, name, rows=30, seed=0):
    spec = UCI_SETS[name]
    columns = max(spec.features.stop, spec.targets.stop)
    table = np.random.default_rng(seed).normal(size=(rows, columns))
    path = root / spec.files[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join(f"c{i}" for i in range(columns)) if spec.header else ""
    np.savetxt(path, table, delimiter=",", header=header, comments="")
    if not spec.header:      # np.savetxt writes an empty first line for header=""
        path.write_text(path.read_text().lstrip("\n"))
    return path


def test_cifar10_pickles(tmp_path):
    make_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path)
    assert data.train.x.shape == (20, 3, 32, 32) and data.train.x.dtype == torch.uint8
    assert data.test.y.shape == (4,) and data.num_outputs == 10 and data.augment
    x = prepare(data, val_fraction=0.25).inputs(data.train.x[:3], generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32)


@pytest.mark.parametrize("name, classes", [("cifar100", 100), ("cifar100_coarse", 20)])
def test_cifar100_fine_and_coarse_labels(tmp_path, name, classes):
    for split in ("train", "test"):
        _cifar_pickle(tmp_path / "cifar-100-python" / split, 6, {"fine_labels": 100, "coarse_labels": 20})
    data = load_dataset(name, tmp_path)
    assert data.num_outputs == classes and int(data.train.y.max()) < classes


def test_cinic10_folders(tmp_path):
    from mn.data.images import CINIC_CLASSES
    for split in ("train", "valid", "test"):
        for i, c in enumerate(CINIC_CLASSES):
            _png(tmp_path / "cinic-10" / split / c / f"{split}-{i}.png", 32, (i * 20, 0, 0))
    data = load_dataset("cinic10", tmp_path)
    assert data.train.x.shape == (10, 3, 32, 32) and data.val is not None and data.test.y.tolist() == list(range(10))
    assert data.train.x[3, 0, 0, 0] == 60


def test_tiny_imagenet_is_downsampled_to_32(tmp_path):
    make_tiny_imagenet(tmp_path)
    data = load_dataset("tiny_imagenet", tmp_path)
    assert data.train.x.shape == (4, 3, 32, 32) and data.test.y.tolist() == [0, 1] and data.num_outputs == 2


@pytest.mark.parametrize("name", sorted(UCI_SETS))
def test_uci_regression_sets(tmp_path, name):
    write_uci(tmp_path, name)
    data = load_dataset(name, tmp_path)
    spec = UCI_SETS[name]
    assert data.task == "regression" and data.test is None
    assert data.train.x.shape == (30, spec.features.stop - spec.features.start)
    assert data.num_outputs == (2 if name == "gom" else 1)


def test_any_csv_last_column_is_target(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("a,b,target\n1,2,3\n4,5,6\n7,8,10\n")
    data = load_dataset(f"csv:{path}")
    assert data.train.x.tolist() == [[1, 2], [4, 5], [7, 8]] and data.train.y[:, 0].tolist() == [3, 6, 10]


@pytest.mark.parametrize("name, expected", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                            ("cinic10", "cinic-10"), ("tiny_imagenet", "tiny-imagenet-200"),
                                            ("music", "YearPredictionMSD.txt"), ("gom", "1059_tracks")])
def test_missing_files_say_where_to_put_them(tmp_path, name, expected):
    with pytest.raises(FileNotFoundError, match=expected) as err:
        load_dataset(name, tmp_path)
    assert str(tmp_path) in str(err.value) and "nothing is downloaded" in str(err.value)


def test_corrupt_files_name_the_file(tmp_path):
    make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)
    with open(bad, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataFormatError, match=r"data_batch_3.*3072"):
        load_dataset("cifar10", tmp_path)


def test_pickles_that_would_run_code_are_refused(tmp_path):
    make_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataFormatError, match="refusing to load builtins.print"):
        load_dataset("cifar10", tmp_path)


def test_bad_image_and_bad_table_name_the_file(tmp_path):
    make_tiny_imagenet(tmp_path)
    img = tmp_path / "tiny-imagenet-200" / "train" / "n02" / "images" / "n02_1.JPEG"
    img.write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="n02_1.JPEG"):
        load_dataset("tiny_imagenet", tmp_path)
    path = write_uci(tmp_path, "toms")
    path.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataFormatError, match=r"TomsHardware.data: expected 97 columns"):
        load_dataset("toms", tmp_path)
    path.write_text("1,2,x\n")
    with pytest.raises(DataFormatError, match="TomsHardware.data is not a numeric"):
        load_dataset("toms", tmp_path)


def _write_cifar10_batch(root, name, labels, protocol=pickle.DEFAULT_PROTOCOL):
    path = root / "cifar-10-batches-py" / name
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((len(labels), 3072), np.uint8), b"labels": np.array(labels)}, f,
                    protocol=protocol)


def test_cifar_labels_out_of_range_name_the_file_and_label(tmp_path):
    make_cifar10(tmp_path)
    _write_cifar10_batch(tmp_path, "data_batch_2", [3, 10, 1])
    with pytest.raises(DataFormatError, match=r"data_batch_2: label 10 \(row 1 of b'labels'\) is outside 0\.\.9"):
        load_dataset("cifar10", tmp_path)
    _write_cifar10_batch(tmp_path, "data_batch_2", [-1, 0])
    with pytest.raises(DataFormatError, match="data_batch_2: label -1"):
        load_dataset("cifar10", tmp_path)
    for split in ("train", "test"):
        _cifar_pickle(tmp_path / "cifar-100-python" / split, 6, {"fine_labels": 100, "coarse_labels": 20})
    with open(tmp_path / "cifar-100-python" / "test", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [5, 99], b"coarse_labels": [19, 20]}, f)
    with pytest.raises(DataFormatError, match=r"cifar-100-python.test: label 20 \(row 1 of b'coarse_labels'\)"):
        load_dataset("cifar100", tmp_path)


def test_python3_protocol2_cifar_pickles_load_and_stay_safe(tmp_path):
    import codecs

    make_cifar10(tmp_path)
    _write_cifar10_batch(tmp_path, "test_batch", [7, 0, 9], protocol=2)     # bytes via _codecs.encode(.., latin1)
    assert load_dataset("cifar10", tmp_path).test.y.tolist() == [7, 0, 9]

    class OtherCodec:
        def __reduce__(self):
            return (codecs.encode, ("text", "rot13"))     # pickles as _codecs.encode, with another codec

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": OtherCodec(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataFormatError, match=r"test_batch .*refusing _codecs.encode\('text', 'rot13'\)"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("rows", [1, 3])
def test_csv_with_fewer_rows_than_folds_names_the_file(tmp_path, rows):
    path = tmp_path / "small.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(rows)))
    with pytest.raises(DataFormatError, match=f"small.csv: {rows} row\\(s\\) is fewer than the 5 cross-validation "
                                              "folds; it needs at least 5 rows"):
        prepare(load_dataset(f"csv:{path}"), fold=0, folds=5)


def test_the_row_count_asked_for_is_enough(tmp_path):
    """3 folds with a validation share: 2 rows are asked for the count that passes both checks (5), and 5 do."""
    path = tmp_path / "two.csv"
    path.write_text("a,y\n1,2\n3,4\n")
    with pytest.raises(DataFormatError, match=r"two.csv: 2 row\(s\) is fewer than the 3 cross-validation folds; "
                                              r"it needs at least 5 rows"):
        prepare(load_dataset(f"csv:{path}"), fold=0, folds=3, val_fraction=0.1)
    path.write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(5)))
    for fold in range(3):
        prepare(load_dataset(f"csv:{path}"), fold=fold, folds=3, val_fraction=0.1)


def test_csv_with_too_few_training_rows_per_fold_names_the_file(tmp_path):
    path = tmp_path / "three.csv"          # 3 folds of 1 row: 2 left for training, 1 of them for validation
    path.write_text("a,y\n1,2\n3,4\n5,6\n")
    with pytest.raises(DataFormatError, match=r"three.csv: 3 rows leave 1 training row\(s\) in a fold"):
        prepare(load_dataset(f"csv:{path}"), fold=1, folds=3, val_fraction=0.1)


def test_csv_values_that_overflow_name_the_file(tmp_path):
    huge = tmp_path / "huge.csv"
    huge.write_text("a,b,y\n" + "".join(f"{i},{'1e200' if i == 3 else i},{i}\n" for i in range(10)))
    with pytest.raises(DataFormatError, match=r"huge.csv: values up to 1e\+200 overflow float32"):
        load_dataset(f"csv:{huge}")
    wide = tmp_path / "wide.csv"           # each value fits float32, their sum (the mean) does not
    wide.write_text("a,b,y\n" + "".join(f"{i},3e38,{i}\n" for i in range(10)))
    with pytest.raises(DataFormatError, match=r"wide.csv: standardising the inputs overflows float32"):
        prepare(load_dataset(f"csv:{wide}"), fold=0)
