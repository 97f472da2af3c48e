"""The limited-data benchmark (``cxraug bench``): does synthetic data help a classifier trained on
little real data? :class:`BenchConfig` says what it compares and :func:`run_bench` runs it (the
protocol: :mod:`cxraug.experiments.bench.run`)."""

from cxraug.classify.real import RealData, load_real_splits
from cxraug.experiments.bench.arms import arm_data, real_subset_set, run_job, shuffled_labels
from cxraug.experiments.bench.config import (
    ARMS,
    DUP,
    GEN_ARMS,
    GEN_DATA,
    PRETRAIN_ARMS,
    SHUFFLED,
    SYNTH_ARMS,
    BenchConfig,
    job_dir,
    jobs,
)
from cxraug.experiments.bench.generators import generator_config
from cxraug.experiments.bench.inputs import load_test_sets, subset_warnings
from cxraug.experiments.bench.report import versions
from cxraug.experiments.bench.run import run_bench

__all__ = ["ARMS", "DUP", "GEN_ARMS", "GEN_DATA", "PRETRAIN_ARMS", "SHUFFLED", "SYNTH_ARMS", "BenchConfig", "RealData", "arm_data",
           "generator_config", "job_dir", "real_subset_set", "shuffled_labels", "jobs", "load_real_splits", "load_test_sets", "run_bench",
           "run_job", "subset_warnings", "versions"]
