"""Reading finished runs back: the paper's report (`python -m experiments.report`).

paper.py     report.md: the tables and figures of the paper over run directories
analysis.py  per-run analyses (weight norms, embedding noise, local Lipschitz constants)
tables.py    the tables (markdown and CSV) read from run directories
figures.py   the figures (PNG)
stats.py     statistics over seeds (paired t-test, confidence intervals, rank correlation)
"""
