"""kproxy: two TCP sockets joined in the kernel (sockmap), side by side with the
user-space proxies they replace (splice, boomerang), and the SSL-proxy variant.

One module per job: bpfasm (an eBPF assembler), bpfsys (the bpf() syscall), programs
(the verdict and stream parser, as readable source), sockmap (a pair's maps and
programs), joiner and relay (the proxy's data paths and close semantics), policy (the
L7 rule in user space), ktls and tlsctx (TLS termination), proxy (the process), and
config, setup, status, measure, verify, feature (what a lab uses). This package imports
nothing itself, so the proxy process starts without pyroute2.
"""
