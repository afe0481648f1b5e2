"""From run directories to the paper's Table 1 and figures: ``runs`` reads what a run wrote,
``rows`` is the list of Table 1 rows, ``table`` aggregates (``ladarun-table``) and ``figures``
draws (``ladarun-figures``)."""
