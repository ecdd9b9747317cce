"""kTLS numbers from include/uapi/linux/tls.h and include/linux/tcp.h, and the TLS record
constants (RFC 8446 5.1) that code handling kTLS records needs."""

from __future__ import annotations

TCP_ULP = 31  # setsockopt(IPPROTO_TCP, TCP_ULP, "tls")
SOL_TLS = 282
TLS_TX = 1
TLS_RX = 2
TLS_TX_ZEROCOPY_RO = 3
TLS_RX_EXPECT_NO_PAD = 4
TLS_TX_MAX_PAYLOAD_LEN = 5  # u16, RFC 8449 record size limit (7.x kernels; ENOPROTOOPT before)
TLS_SET_RECORD_TYPE = 1  # cmsg on send
TLS_GET_RECORD_TYPE = 2  # cmsg on recv

TLS_1_2_VERSION = 0x0303
TLS_1_3_VERSION = 0x0304

TLS_CIPHER_AES_GCM_128 = 51
TLS_CIPHER_AES_GCM_256 = 52
TLS_CIPHER_AES_CCM_128 = 53
TLS_CIPHER_CHACHA20_POLY1305 = 54

# record content types
CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CLOSE_NOTIFY = bytes([1, 0])  # alert body: level warning, description close_notify
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23
HS_KEY_UPDATE = 24  # handshake message type KeyUpdate (RFC 8446 4.6.3)
RECORD_HEADER = 5
MAX_PLAINTEXT = 1 << 14
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256  # TLSCiphertext.length limit in TLS 1.3
