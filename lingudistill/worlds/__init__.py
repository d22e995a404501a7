"""Worlds: miniatures of the paper's experiment, built offline, in which a job's recovery can be measured.

    toy    tiny made-up models and knowledge; builds in about a minute (`lingudistill toy build DIR`)
    real   the real SmolLM2-135M-Instruct as teacher and a SmolVLM-shaped student degraded from it, scored on
           knowledge from registry packages (`lingudistill toy build DIR --real`)

In both, the evaluated knowledge is held out: the teacher learned it before, the recovery text never states it.
"""
