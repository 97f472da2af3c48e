"""Cohort planning: which label vector and seed each synthetic image gets.

A plan for ``--labels pneumonia,effusion --n 1000 --negatives 0.2`` has 200 explicit negatives
(images with none of the requested labels) and 400 images per requested label. With
``cooccurrence="empirical"`` each planned image copies the other findings of a random real
training image that has its target label (so a pneumonia image also has an effusion as often as
real pneumonia images do); with ``"none"`` only the target is positive. Every image gets its
own seed derived from the cohort seed and its index, so the cohort does not depend on batch
size, shards or processes, and any image can be regenerated from its row.
:func:`build_plan` adds what the generator is given: each image's prompt and DKIM hint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxraug.core.errors import CxraugError
from cxraug.core.seeds import image_seed, stable_seed
from cxraug.data import labels as L
from cxraug.data.templates import PromptBuilder, paper_hint

NEGATIVE = "negative"
COOCCURRENCE = ("empirical", "none")
#: Observations that describe the image as a whole, not a co-occurring finding.
_NOT_FINDINGS = ("No Finding",)


@dataclasses.dataclass
class CohortSpec:
    labels: list[str]
    n: int
    negatives: float = 0.2
    cooccurrence: str = "empirical"
    seed: int = 0

    def validate(self) -> None:
        if self.n <= 0:
            raise CxraugError(f"--n {self.n}: must be a positive number of images")
        if not 0 <= self.negatives < 1:
            raise CxraugError(f"--negatives {self.negatives}: must be a fraction in [0, 1)")
        if self.cooccurrence not in COOCCURRENCE:
            raise CxraugError(f"--cooccurrence {self.cooccurrence!r}: choose empirical or none")
        if not self.labels:
            raise CxraugError("--labels: give at least one observation")


def _targets(spec: CohortSpec) -> list[str]:
    n_neg = int(round(spec.negatives * spec.n))
    n_pos = spec.n - n_neg
    k = len(spec.labels)
    counts = [n_pos // k + (1 if i < n_pos % k else 0) for i in range(k)]
    return [lab for lab, c in zip(spec.labels, counts) for _ in range(c)] + [NEGATIVE] * n_neg


def plan_cohort(spec: CohortSpec, train_labels: np.ndarray | None = None,
                start_index: int = 0, targets: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per planned image: ``index, target, seed`` and the 14 observation columns.

    ``train_labels``: raw labels ``[N, 14]`` of the generator's training data; needed for
    ``empirical`` co-occurrence and to know which observations that data labels at all
    (unlabelled observations stay blank in the plan rather than being claimed negative).
    ``start_index`` continues an existing plan (``--until-accepted`` top-ups); ``targets``
    (requested observations or ``"negative"``, one per image) replaces the balanced target
    list, e.g. with the targets still missing after the quality gates.
    """
    spec.validate()
    labels = [L.canonical(x) for x in spec.labels]
    spec = dataclasses.replace(spec, labels=labels)
    if targets is None:
        targets = _targets(spec)
    else:
        targets = [NEGATIVE if t.lower() == NEGATIVE else L.canonical(t) for t in targets]
        stray = [t for t in targets if t != NEGATIVE and t not in labels]
        if stray:
            raise CxraugError(f"planned target {stray[0]!r} is not one of the requested labels {labels}")
    labelled = (np.ones(L.N_OBS, bool) if train_labels is None
                else ~np.isnan(train_labels).all(axis=0))
    if spec.cooccurrence == "empirical" and train_labels is None:
        raise CxraugError("--cooccurrence empirical needs the generator's training labels")
    rng = np.random.default_rng(image_seed(spec.seed, -1 - start_index))
    req = [L.index(x) for x in labels]
    rows = []
    for k, target in enumerate(targets):
        idx = start_index + k
        vec = np.where(labelled, L.NEGATIVE, np.nan).astype(np.float32)
        if target == NEGATIVE:
            pool = None if train_labels is None else np.flatnonzero(
                (train_labels[:, req] != L.POSITIVE).all(axis=1))
        else:
            pool = None if train_labels is None else np.flatnonzero(
                train_labels[:, L.index(target)] == L.POSITIVE)
            if pool is not None and len(pool) == 0:
                raise CxraugError(f"--labels {target.lower()}: the generator's training data has no "
                                  "positive example of it")
        if spec.cooccurrence == "empirical" and pool is not None and len(pool):
            src = train_labels[rng.choice(pool)]
            for j, o in enumerate(L.OBSERVATIONS):
                if src[j] == L.POSITIVE and o not in _NOT_FINDINGS and labelled[j]:
                    vec[j] = L.POSITIVE
        if target != NEGATIVE:
            vec[L.index(target)] = L.POSITIVE
        for j in req:  # explicit negatives never carry a requested label
            if target == NEGATIVE and labelled[j]:
                vec[j] = L.NEGATIVE
        vec = L.derive_no_finding(vec)
        if labelled[L.index("No Finding")] and np.isnan(vec[L.index("No Finding")]):
            vec[L.index("No Finding")] = L.NEGATIVE
        rows.append({"index": idx, "target": target.lower(), "seed": image_seed(spec.seed, idx),
                     **dict(zip(L.OBSERVATIONS, vec.tolist()))})
    return pd.DataFrame(rows)


def build_plan(spec: CohortSpec, prompts: str, train_labels: np.ndarray, has_adapter: bool,
               start_index: int = 0, targets: list[str] | None = None, round_: int = 0) -> pd.DataFrame:
    """The cohort plan (:func:`plan_cohort` of ``spec``) with each image's round, prompt and DKIM
    hint (both deterministic). ``prompts``: the prompt source, ``mined`` or ``paper``."""

    plan = plan_cohort(spec, train_labels, start_index, targets)
    builder = PromptBuilder(source=prompts)
    vecs = plan[list(L.OBSERVATIONS)].to_numpy(np.float32)
    texts = [builder.build(v, seed=stable_seed(spec.seed, "prompt", i))
             for v, i in zip(vecs, plan["index"])]
    hints = [paper_hint(v) if has_adapter else "" for v in vecs]
    plan.insert(1, "round", round_)
    plan.insert(4, "prompt", texts)
    plan.insert(5, "hint", hints)
    return plan


def plan_summary(plan: pd.DataFrame) -> pd.DataFrame:
    """Counts per planned label combination (positives joined with '+')."""
    combo = plan[list(L.OBSERVATIONS)].apply(
        lambda r: "+".join(o for o, v in r.items() if v == L.POSITIVE) or "(none)", axis=1)
    return (pd.DataFrame({"target": plan["target"], "labels": combo})
            .value_counts().rename("images").reset_index())
