"""The limited-data benchmark (``cxraug bench``): does synthetic data help a classifier trained on
little real data? :class:`BenchConfig` says what it compares and :func:`run_bench` runs it (the
protocol: :mod:`cxraug.experiments.bench.run`)."""

from cxraug.classify.real import RealData, load_real_splits
from cxraug.experiments.bench.arms import arm_data, run_job
from cxraug.experiments.bench.config import (
    ARMS,
    GEN_ARMS,
    GEN_DATA,
    SYNTH_ARMS,
    BenchConfig,
    job_dir,
    jobs,
)
from cxraug.experiments.bench.generators import generator_config
from cxraug.experiments.bench.inputs import load_test_sets, subset_warnings
from cxraug.experiments.bench.report import versions
from cxraug.experiments.bench.run import run_bench

__all__ = ["ARMS", "GEN_ARMS", "GEN_DATA", "SYNTH_ARMS", "BenchConfig", "RealData", "arm_data",
           "generator_config", "job_dir", "jobs", "load_real_splits", "load_test_sets", "run_bench",
           "run_job", "subset_warnings", "versions"]
