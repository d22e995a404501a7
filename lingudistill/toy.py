"""The toy world's historical import path; the worlds live in lingudistill/worlds/."""

from lingudistill.worlds.toy import ToyWorld, build_toy_world, job_spec

__all__ = ["ToyWorld", "build_toy_world", "job_spec"]
