/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tlsnic: an emulated NIC with TLS 1.2 TX crypto offload, for labs. Devices come in
 * veth-like pairs; each end advertises NETIF_F_HW_TLS_TX, so the kernel's own
 * net/tls/tls_device.c offloads kTLS sockets routed through it and hands it plaintext
 * records, which this "NIC" encrypts on their way to the peer end.
 */
#ifndef TLSNIC_H
#define TLSNIC_H

#include <linux/netdevice.h>
#include <linux/spinlock.h>
#include <linux/version.h>

#include "tlsnic_engine.h"

#define TLSNIC_KIND "tlsnic"

/* What the NIC does with a segment whose TCP sequence is not the one it expects. */
enum tlsnic_strategy {
	TLSNIC_MLX5,	/* rebuild state from the record start (tls_get_record), then encrypt */
	TLSNIC_NFP,	/* software fallback (tls_encrypt_skb), ask the stack to resync */
	TLSNIC_DROP,	/* a NIC that cannot resync: drop the segment */
	TLSNIC_NR_STRATEGIES,
};

extern const char *const tlsnic_strategy_names[TLSNIC_NR_STRATEGIES + 1];

/*
 * ethtool -S counters. The tx_tls_* names are mlx5's (Documentation/networking/
 * tls-offload.rst), tls_tx_fallback/tls_tx_no_fallback nfp's; the rest are this NIC's.
 */
#define TLSNIC_COUNTERS(X)						\
	X(TX_TLS_ENCRYPTED_PACKETS, "tx_tls_encrypted_packets")	\
	X(TX_TLS_ENCRYPTED_BYTES, "tx_tls_encrypted_bytes")		\
	X(TX_TLS_CTX, "tx_tls_ctx")					\
	X(TX_TLS_DEL, "tx_tls_del")					\
	X(TX_TLS_OOO, "tx_tls_ooo")					\
	X(TX_TLS_DUMP_PACKETS, "tx_tls_dump_packets")			\
	X(TX_TLS_DUMP_BYTES, "tx_tls_dump_bytes")			\
	X(TX_TLS_RESYNC_BYTES, "tx_tls_resync_bytes")			\
	X(TX_TLS_DROP_NO_SYNC_DATA, "tx_tls_drop_no_sync_data")	\
	X(TX_TLS_SKIP_NO_SYNC_DATA, "tx_tls_skip_no_sync_data")	\
	X(TLS_TX_FALLBACK, "tls_tx_fallback")				\
	X(TLS_TX_NO_FALLBACK, "tls_tx_no_fallback")			\
	X(TX_TLS_RESYNC_REQ, "tx_tls_resync_req")			\
	X(TX_TLS_RESYNC, "tx_tls_resync")				\
	X(TX_TLS_CTX_REFUSED, "tx_tls_ctx_refused")			\
	X(TX_TLS_CTX_FULL, "tx_tls_ctx_full")				\
	X(TX_TLS_CORRUPTED_TAGS, "tx_tls_corrupted_tags")		\
	X(TX_TLS_BAD_STREAM, "tx_tls_bad_stream")			\
	X(TX_TLS_ENCRYPT_NS, "tx_tls_encrypt_ns")			\
	X(TX_TLS_DUMP_NS, "tx_tls_dump_ns")				\
	X(TX_TLS_COPY_NS, "tx_tls_copy_ns")				\
	X(TX_NOMEM, "tx_nomem")

#define TLSNIC_ENUM(id, name) TLSNIC_##id,
enum tlsnic_counter {
	TLSNIC_COUNTERS(TLSNIC_ENUM)
	TLSNIC_NR_COUNTERS,
};
#undef TLSNIC_ENUM

struct tlsnic_priv {
	struct net_device __rcu *peer;
	struct net_device *dev;
	/* knobs, set through sysfs (tlsnic_knobs.c), read locklessly on the data path */
	int strategy;			/* enum tlsnic_strategy */
	bool refuse_add;		/* tls_dev_add fails: the kernel falls back to software */
	u32 corrupt_every;		/* corrupt the tag of every record whose number % N == 0 */
	u32 max_ctx;			/* tls_dev_add fails with ENOSPC beyond this; 0: no limit */
	atomic_t nr_ctx;		/* offloaded flows now */
	atomic64_t counters[TLSNIC_NR_COUNTERS];
	atomic64_t tx_packets, tx_bytes, tx_dropped;
	atomic64_t rx_packets, rx_bytes;
};

static inline void tlsnic_count(struct tlsnic_priv *priv, enum tlsnic_counter c, u64 n)
{
	atomic64_add(n, &priv->counters[c]);
}

/* tlsnic_offload.c */
extern const struct tlsdev_ops tlsnic_tlsdev_ops;
struct sk_buff *tlsnic_tls_xmit(struct tlsnic_priv *priv, struct sk_buff *skb);

/* tlsnic_knobs.c */
extern const struct attribute_group tlsnic_knobs_group;

/* tlsnic_crypto.c: the engine's primitives from the kernel crypto API */
struct tlsnic_prim;
struct tlsnic_prim *tlsnic_prim_alloc(const u8 *key, unsigned int key_len);
void tlsnic_prim_free(struct tlsnic_prim *p);

#endif /* TLSNIC_H */
