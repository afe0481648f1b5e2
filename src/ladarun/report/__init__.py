"""From run directories to the paper's Table 1, its figures and the verdicts on them: ``runs``
reads what a run wrote, ``rows`` lists Table 1's rows, ``cells`` computes the table's cells,
``stats`` holds the statistics (Welch, Holm, the bold rule), ``render`` writes the tables
(``ladarun-table`` in ``table``), ``compare`` and ``family`` test rows against rows
(``ladarun-compare``), ``figures`` draws (``ladarun-figures``) and ``class_balance`` counts the
classes of the picks (``ladarun-queries``)."""
