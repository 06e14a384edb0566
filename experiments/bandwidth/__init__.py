"""The supervision-bandwidth sweep: does a wider rating head shrink the local Lipschitz
constant? (`python -m experiments.bandwidth`)

sweep.py    the command line
data.py     one synthetic dataset re-bucketed into N rating classes per N
measure.py  each N's ensemble trained, then its Lipschitz and softmax-Jacobian measurements
report.py   bandwidth.csv / bandwidth.md / bandwidth.png
"""
