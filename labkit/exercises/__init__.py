"""Exercises: tasks a learner does in a running lab, graded by declared checks.

An exercises file (YAML, beside the lab's notebook) lists tasks with checks, progressive
hints and a reference solution; a topology names it (`exercises:`). `api.Exercises` is what
the CLI (`labkit exercise`) and the notebook widgets use; checks run commands in the nodes
through the Lab API and judge their output here, so they work on a lab in a VM too.
"""
