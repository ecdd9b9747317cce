"""TLS TX offload to an emulated NIC: the tlsnic kernel module (kmod/) and the lab feature
that builds NICs from it, drives TLS sessions through them and judges what they sent."""
