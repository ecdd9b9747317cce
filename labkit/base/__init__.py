"""The layer below everything else: namespaces, rtnetlink sockets, processes, private files
and bounded waiting.

Every other package (lab/, hosts/, features/, packets/, traffic/) builds on these, and
nothing here imports from them, so a feature never has to reach into the lab lifecycle to
enter a namespace or stop a process.
"""
