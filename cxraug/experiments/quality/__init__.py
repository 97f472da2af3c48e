"""The generator quality card of ``cxraug eval``: generative metrics of a synthetic cohort against
real images, each next to its real-vs-real floor (:mod:`.card`), on features from one extractor
(:mod:`.extractors`) of images loaded at one size (:mod:`.inputs`), and extractor-free image
statistics (power spectrum, detail, contrast, percentiles) beside their own floor (:mod:`.image_stats`)."""

from cxraug.experiments.quality.card import evaluate, summary_rows

__all__ = ["evaluate", "summary_rows"]
