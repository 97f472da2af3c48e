import pytest

from cxraug.core.errors import DataError
from cxraug.data import labels as L
from cxraug.data.adapters import load_dataset
from cxraug.data.splits import (
    EXCLUDED,
    assign_splits,
    load_splits,
    real_subset,
    save_splits,
    splits_for,
)


def _no_patient_crosses(ds):
    used = ds.table[ds.table["assigned_split"] != EXCLUDED]
    return (used.groupby("patient_id")["assigned_split"].nunique() == 1).all()


def test_random_splits_are_patient_disjoint(nih_fixture):
    ds = assign_splits(load_dataset(nih_fixture), val_frac=0.2, test_frac=0.2, seed=1)
    assert _no_patient_crosses(ds)
    assert set(ds.table["assigned_split"]) == {"train", "val", "test"}
    again = assign_splits(load_dataset(nih_fixture), val_frac=0.2, test_frac=0.2, seed=1)
    assert (again.table["assigned_split"] == ds.table["assigned_split"]).all()
    other = assign_splits(load_dataset(nih_fixture), val_frac=0.2, test_frac=0.2, seed=2)
    assert (other.table["assigned_split"] != ds.table["assigned_split"]).any()


def test_official_test_kept_and_overlap_dropped(kermany_fixture):
    idx = kermany_fixture / "index.csv"
    lines = idx.read_text().splitlines()
    # make patient P009 (test) also own a training image
    lines[1] = lines[1].replace("P000", "P009")
    idx.write_text("\n".join(lines) + "\n")
    ds = load_dataset(kermany_fixture)
    s = assign_splits(ds, val_frac=0.2)
    assert (s.table.loc[s.table["split"] == "test", "assigned_split"] == "test").all()
    assert s.table.iloc[0]["assigned_split"] == EXCLUDED
    assert any("official test split dropped" in f for f in s.filters)
    assert _no_patient_crosses(s)
    keep = assign_splits(ds, val_frac=0.2, overlap="keep")
    assert keep.table.iloc[0]["assigned_split"] == "test" and _no_patient_crosses(keep)


def test_real_kermany_splits_patient_disjoint(data_root):
    s = assign_splits(load_dataset(data_root / "kermany"))
    assert _no_patient_crosses(s)
    assert (s.table["assigned_split"] == "test").sum() == 624


def test_split_file_written_and_reused(nih_fixture, tmp_path):
    ds = load_dataset(nih_fixture)
    path = tmp_path / "splits.csv"
    a = splits_for(ds, path, seed=3)
    assert path.is_file()
    b = splits_for(ds, path, seed=99)  # reused: the seed no longer matters
    assert (a.table["assigned_split"] == b.table["assigned_split"]).all()
    path.write_text("id,patient_id,split\nother.png,1,train\n")
    with pytest.raises(DataError, match="does not match"):
        splits_for(ds, path)


def test_split_file_bad_values(nih_fixture, tmp_path):
    ds = assign_splits(load_dataset(nih_fixture))
    path = save_splits(ds, tmp_path / "s.csv")
    path.write_text(path.read_text().replace(",test\n", ",holdout\n", 1))
    with pytest.raises(DataError, match="'holdout'"):
        load_splits(ds, path)


def test_subsets_nested_stratified_patient_level(data_root):
    train = assign_splits(load_dataset(data_root / "kermany")).where_split("train")
    fracs = [0.01, 0.05, 0.1, 0.25, 1.0]
    subsets = [real_subset(train, f, seed=0) for f in fracs]
    ids = [set(s.ids) for s in subsets]
    for small, big in zip(ids, ids[1:]):
        assert small < big  # nested
    assert ids[-1] == set(train.ids)
    prev = 0.0
    full_rate = (train.labels[:, L.index("Pneumonia")] == 1).mean()
    for f, s in zip(fracs, subsets):
        n_pat = s.table["patient_id"].nunique()
        assert abs(n_pat / train.table["patient_id"].nunique() - f) < 0.02
        rate = (s.labels[:, L.index("Pneumonia")] == 1).mean()
        assert abs(rate - full_rate) < 0.1  # stratified
        # patient-level: every image of a chosen patient is in
        chosen = set(s.table["patient_id"])
        assert len(s) == int(train.table["patient_id"].isin(chosen).sum())
        assert n_pat > prev
        prev = n_pat
    other = real_subset(train, 0.05, seed=1)
    assert set(other.ids) != ids[1]


def test_subset_fraction_range(nih_fixture):
    train = assign_splits(load_dataset(nih_fixture)).where_split("train")
    for bad in (0, -0.1, 1.5):
        with pytest.raises(DataError, match="must be in \\(0, 1\\]"):
            real_subset(train, bad)
    assert len(real_subset(train, 1e-6)) >= 1
