"""Reproducing kernel bug reports: scenario files run on several kernels, one fresh VM each.

A scenario (`repro/*.yaml`) names a topology, the kernels to try and ordered steps; the
runner brings the lab up in a VM of its own per kernel, runs the steps, judges the
expectations, and leaves a bundle a maintainer can read without labkit. Modules:
model (what a scenario is); loader, steps_loader, expect_loader (YAML -> model, located
errors); placeholders; pcapfile; steps and checks (what each step does; poll and
sendframes run inside nodes); results (the verdict rule); runner (per kernel); table;
bundle and redact (what is written, and what is never written); skeleton (`repro new`).
"""
