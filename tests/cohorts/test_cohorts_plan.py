"""Cohort planning: balancing, explicit negatives, co-occurrence, seeds, top-ups, argument parsing."""

import numpy as np
import pytest

from cxraug.cohorts.config import SynthConfig, parse_shard
from cxraug.cohorts.gates import parse_gates
from cxraug.cohorts.generate import _round_robin
from cxraug.cohorts.plan import CohortSpec, plan_cohort, plan_summary
from cxraug.core import config as C
from cxraug.core.errors import CxraugError
from cxraug.core.seeds import image_seed
from cxraug.data import labels as L

PNEU, EFF, ATEL = L.index("Pneumonia"), L.index("Pleural Effusion"), L.index("Atelectasis")


def _train_labels(n=1000, seed=0):
    """Fake training labels: pneumonia 40%, effusion in 50% of pneumonia and 10% of the rest,
    atelectasis 20%, cardiomegaly never labelled (NaN)."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, L.N_OBS), np.float32)
    y[:, L.index("Cardiomegaly")] = np.nan
    pneu = rng.random(n) < 0.4
    y[:, PNEU] = pneu
    y[:, EFF] = np.where(pneu, rng.random(n) < 0.5, rng.random(n) < 0.1)
    y[:, ATEL] = rng.random(n) < 0.2
    return L.derive_no_finding(y)


def test_counts_are_balanced_with_explicit_negatives():
    plan = plan_cohort(CohortSpec(["pneumonia", "effusion"], n=101, negatives=0.2,
                                  cooccurrence="none"), _train_labels())
    counts = plan["target"].value_counts().to_dict()
    assert counts == {"pneumonia": 41, "pleural effusion": 40, "negative": 20}
    assert plan["index"].tolist() == list(range(101))
    neg = plan[plan["target"] == "negative"]
    assert (neg["Pneumonia"] == 0).all() and (neg["Pleural Effusion"] == 0).all()
    assert (neg["No Finding"] == 1).all()
    pos = plan[plan["target"] == "pneumonia"]
    assert (pos["Pneumonia"] == 1).all() and (pos["Pleural Effusion"] == 0).all()
    assert (pos["No Finding"] == 0).all()
    # an observation the training data never labels stays blank, never a claimed negative
    assert plan["Cardiomegaly"].isna().all()


def test_empirical_cooccurrence_follows_the_training_data():
    y = _train_labels(4000)
    plan = plan_cohort(CohortSpec(["pneumonia"], n=2000, negatives=0.0, cooccurrence="empirical"), y)
    real = (y[y[:, PNEU] == 1][:, EFF] == 1).mean()
    planned = (plan["Pleural Effusion"] == 1).mean()
    assert abs(planned - real) < 0.05 and 0.4 < planned < 0.6
    assert ((plan["Atelectasis"] == 1).mean() - 0.2) ** 2 < 0.05 ** 2
    none = plan_cohort(CohortSpec(["pneumonia"], n=200, negatives=0.0, cooccurrence="none"), y)
    assert (none["Pleural Effusion"] == 1).sum() == 0 and (none["Atelectasis"] == 1).sum() == 0
    summary = plan_summary(plan)
    assert summary["images"].sum() == 2000 and "Pneumonia+Pleural Effusion" in set(summary["labels"])


def test_seeds_are_per_image_and_the_plan_is_deterministic():
    spec = CohortSpec(["pneumonia"], n=50, seed=3)
    a, b = plan_cohort(spec, _train_labels()), plan_cohort(spec, _train_labels())
    assert a.equals(b)
    assert a["seed"].tolist() == [image_seed(3, i) for i in range(50)]
    assert a["seed"].nunique() == 50
    other = plan_cohort(CohortSpec(["pneumonia"], n=50, seed=4), _train_labels())
    assert not set(a["seed"]) & set(other["seed"])


def test_top_up_plans_continue_the_indices_with_given_targets():
    spec = CohortSpec(["pneumonia", "effusion"], n=10)
    top = plan_cohort(spec, _train_labels(), start_index=10,
                      targets=["pneumonia", "negative", "Pleural Effusion"])
    assert top["index"].tolist() == [10, 11, 12]
    assert top["target"].tolist() == ["pneumonia", "negative", "pleural effusion"]
    assert top["seed"].tolist() == [image_seed(0, i) for i in (10, 11, 12)]
    with pytest.raises(CxraugError, match="not one of the requested"):
        plan_cohort(spec, _train_labels(), targets=["atelectasis"])
    assert _round_robin({"pneumonia": 3, "negative": 1}, 3) == ["pneumonia", "negative", "pneumonia"]


def test_bad_specs_fail_with_one_line():
    with pytest.raises(CxraugError, match="--n 0"):
        plan_cohort(CohortSpec(["pneumonia"], n=0), _train_labels())
    with pytest.raises(L.UnknownLabelError, match="valid labels are"):
        plan_cohort(CohortSpec(["pneumonnia"], n=5), _train_labels())
    with pytest.raises(CxraugError, match="no positive example"):
        plan_cohort(CohortSpec(["cardiomegaly"], n=5), _train_labels())


@pytest.mark.parametrize("text", ["2/2", "a/b", "0/0", "1", "-1/3", "1/2/3"])
def test_bad_shards_are_refused(text):
    with pytest.raises(CxraugError, match="--shard"):
        parse_shard(text)


def test_shard_and_gate_parsing():
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) == (0, 1)
    assert parse_gates("none") == () and parse_gates("memorization") == ("memorisation",)
    assert parse_gates("memorisation,fidelity") == ("fidelity", "memorisation")
    with pytest.raises(CxraugError, match="--gates"):
        parse_gates("fidelty")


def test_synth_config_is_strict_and_canonical():
    cfg = C.from_dict(SynthConfig, {"labels": ["PNEUMONIA", "effusion"], "n": 4,
                                    "gate": {"thresholds": {"pneumonia": 0.7}}})
    assert cfg.labels == ["Pneumonia", "Pleural Effusion"]
    assert cfg.gate.thresholds == {"Pneumonia": 0.7}
    with pytest.raises(CxraugError, match="unknown config key"):
        C.from_dict(SynthConfig, {"labels": ["pneumonia"], "n": 4, "gate": {"recal": 0.5}})
    with pytest.raises(CxraugError, match="gate.recall"):
        C.from_dict(SynthConfig, {"labels": ["pneumonia"], "n": 4, "gate": {"recall": 1.5}})
