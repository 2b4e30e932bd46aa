"""Reproduce the seed's Table 1 (variants x seeds) and Figure 4 as a report: `mtnews experiment`."""
