"""The kernel's TLS record layer (kTLS), shared by every feature that puts TLS in the
kernel: the handshake daemon (after the upcall), kproxy's TLS pairs, the offload NIC's
traffic. One copy of its uapi numbers, its struct layouts, the key derivations that feed
them, and its counters.

uapi (include/uapi/linux/tls.h numbers), ciphers (the suites kTLS takes), keyschedule
(TLS 1.3 key schedule, TLS 1.2 PRF), sockopt (crypto_info, installing kTLS on a socket,
records of other types), stat (/proc/net/tls_stat per namespace), records (whole records
off a socket within a deadline), keylog (the NSS key log parser, a key log in a pipe),
handshake (an OpenSSL handshake over memory BIOs, then its keys to kTLS), decrypt
(opening captured TLS 1.3 records with a key log).
"""
