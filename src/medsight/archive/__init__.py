"""Archive runs: tens of thousands of studies analysed on a Ray cluster, resumable, with a
summary table (``medsight analyze-archive``)."""
