"""The mechanism study: where does smooth's gain come from? (`python -m experiments.mechanism`)

study.py     the command line and the training of every (backbone, control) pair
controls.py  the controls: what each one changes and the candidates it is tuned over
report.py    mechanism.csv / mechanism.md and the forest plot
"""
