// SPDX-License-Identifier: GPL-2.0
/*
 * The offload half of the emulated NIC: the tlsdev_ops that net/tls/tls_device.c calls
 * (add, del, resync), and the transmit path that encrypts the segments of offloaded flows.
 *
 * Per flow the NIC keeps what a real one keeps: the TCP sequence number it expects next
 * and a record engine positioned there (tlsnic_engine.c). A segment at that sequence is
 * encrypted on the fly (the fast path). Any other segment (a retransmission, a segment
 * reordered or lost before the NIC) finds the engine in the wrong place, and the device's
 * strategy decides, as the real drivers do (Documentation/networking/tls-offload.rst):
 *   mlx5  look the record up with tls_get_record(), replay ("dump") its bytes from the
 *         record start through the engine, then encrypt the segment;
 *   nfp   let the kernel encrypt this segment in software (tls_encrypt_skb()) and, if the
 *         stream jumped ahead, ask the stack to resync the NIC at the next record;
 *   drop  a NIC that cannot resync: the segment is dropped and TCP must retransmit it.
 */
#include <linux/highmem.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <net/ip6_checksum.h>
#include <net/tcp.h>
#include <net/tls.h>

#include "tlsnic.h"

struct tlsnic_flow {
	spinlock_t lock;		/* xmit (softirq) against tls_dev_resync (process) */
	struct net_device *dev;		/* the device the kernel offloaded the flow to */
	struct tlsnic_prim *prim;	/* AES key schedule and GHASH key of the flow */
	struct tlsnic_engine eng;
	u32 start_seq;			/* first TCP sequence number of offloaded data */
	u32 expected_seq;		/* where the engine stands in the TCP stream */
	bool synced;			/* false: the engine's position is unknown */
	u8 *scratch;			/* one page for replaying record bytes (mlx5) */
};

/* A pinned piece of a record's plaintext, replayed through the engine after unlocking. */
struct tlsnic_piece {
	struct page *page;
	u32 off;
	u32 len;
};

/* The driver state in the kTLS context is 16 bytes (TLS_DRIVER_STATE_SIZE_TX): a pointer. */
static struct tlsnic_flow **tlsnic_flow_slot(struct tls_context *tls_ctx)
{
	BUILD_BUG_ON(sizeof(struct tlsnic_flow *) > TLS_DRIVER_STATE_SIZE_TX);
	return __tls_driver_ctx(tls_ctx, TLS_OFFLOAD_CTX_DIR_TX);
}

static void tlsnic_flow_free(struct tlsnic_flow *flow)
{
	tlsnic_prim_free(flow->prim);
	free_page((unsigned long)flow->scratch);
	kfree_sensitive(flow);	/* the engine holds the salt and a GHASH state */
}

static int tlsnic_tls_dev_add(struct net_device *dev, struct sock *sk,
			      enum tls_offload_ctx_dir direction,
			      struct tls_crypto_info *info, u32 start_offload_tcp_sn)
{
	struct tlsnic_priv *priv = netdev_priv(dev);
	const u8 *key, *salt, *rec_seq;
	struct tlsnic_flow *flow;
	unsigned int key_len;
	u32 max = READ_ONCE(priv->max_ctx);
	int err;

	if (direction != TLS_OFFLOAD_CTX_DIR_TX)
		return -EOPNOTSUPP;
	/* any error makes the kernel fall back to software kTLS (txconf: sw) */
	if (READ_ONCE(priv->refuse_add) || info->version != TLS_1_2_VERSION) {
		tlsnic_count(priv, TLSNIC_TX_TLS_CTX_REFUSED, 1);
		return -EOPNOTSUPP;
	}
	switch (info->cipher_type) {
	case TLS_CIPHER_AES_GCM_128: {
		struct tls12_crypto_info_aes_gcm_128 *c = (void *)info;

		key = c->key;
		key_len = sizeof(c->key);
		salt = c->salt;
		rec_seq = c->rec_seq;
		break;
	}
	case TLS_CIPHER_AES_GCM_256: {
		struct tls12_crypto_info_aes_gcm_256 *c = (void *)info;

		key = c->key;
		key_len = sizeof(c->key);
		salt = c->salt;
		rec_seq = c->rec_seq;
		break;
	}
	default:
		tlsnic_count(priv, TLSNIC_TX_TLS_CTX_REFUSED, 1);
		return -EOPNOTSUPP;
	}
	if (atomic_inc_return(&priv->nr_ctx) > max && max) {
		atomic_dec(&priv->nr_ctx);
		tlsnic_count(priv, TLSNIC_TX_TLS_CTX_FULL, 1);
		return -ENOSPC;
	}

	err = -ENOMEM;
	flow = kzalloc(sizeof(*flow), GFP_KERNEL);
	if (!flow)
		goto undo_count;
	flow->scratch = (u8 *)__get_free_page(GFP_KERNEL);
	if (!flow->scratch)
		goto free_flow;
	flow->prim = tlsnic_prim_alloc(key, key_len);
	if (IS_ERR(flow->prim)) {
		/* the kernel falls back to software kTLS without a word: say why here */
		net_warn_ratelimited("%s: tls_dev_add: crypto setup failed (%pe), flow left to software kTLS\n",
				     netdev_name(dev), flow->prim);
		err = PTR_ERR(flow->prim);
		flow->prim = NULL;
		goto free_flow;
	}
	spin_lock_init(&flow->lock);
	flow->dev = dev;
	tlsnic_engine_init(&flow->eng, flow->prim, salt, get_unaligned_be64(rec_seq));
	flow->start_seq = start_offload_tcp_sn;
	flow->expected_seq = start_offload_tcp_sn;
	flow->synced = true;
	*tlsnic_flow_slot(tls_get_ctx(sk)) = flow;
	tlsnic_count(priv, TLSNIC_TX_TLS_CTX, 1);
	return 0;

free_flow:
	tlsnic_flow_free(flow);
undo_count:
	atomic_dec(&priv->nr_ctx);
	return err;
}

/*
 * Called once no skb of the flow can reach the NIC any more: at socket destruction (all
 * its skbs freed) or from tls_device_down() after it switched the socket to software.
 */
static void tlsnic_tls_dev_del(struct net_device *dev, struct tls_context *tls_ctx,
			       enum tls_offload_ctx_dir direction)
{
	struct tlsnic_priv *priv = netdev_priv(dev);
	struct tlsnic_flow **slot, *flow;

	if (direction != TLS_OFFLOAD_CTX_DIR_TX)
		return;
	slot = tlsnic_flow_slot(tls_ctx);
	flow = *slot;
	*slot = NULL;
	if (!flow)
		return;
	tlsnic_flow_free(flow);
	atomic_dec(&priv->nr_ctx);
	tlsnic_count(priv, TLSNIC_TX_TLS_DEL, 1);
}

/*
 * The stack's answer to tls_offload_tx_resync_request() (nfp strategy): record @rcd_sn
 * starts at @seq, and no byte of it has been sent yet. Called from tls_push_record().
 */
static int tlsnic_tls_dev_resync(struct net_device *dev, struct sock *sk, u32 seq,
				 u8 *rcd_sn, enum tls_offload_ctx_dir direction)
{
	struct tlsnic_flow *flow;

	if (direction != TLS_OFFLOAD_CTX_DIR_TX)
		return -EOPNOTSUPP;
	flow = *tlsnic_flow_slot(tls_get_ctx(sk));
	if (!flow)
		return -EINVAL;
	spin_lock_bh(&flow->lock);
	tlsnic_engine_sync(&flow->eng, get_unaligned_be64(rcd_sn));
	flow->expected_seq = seq;
	flow->synced = true;
	spin_unlock_bh(&flow->lock);
	tlsnic_count(netdev_priv(dev), TLSNIC_TX_TLS_RESYNC, 1);
	return 0;
}

const struct tlsdev_ops tlsnic_tlsdev_ops = {
	.tls_dev_add = tlsnic_tls_dev_add,
	.tls_dev_del = tlsnic_tls_dev_del,
	.tls_dev_resync = tlsnic_tls_dev_resync,
};

/* -- transmit ----------------------------------------------------------------------- */

/*
 * Is skb from a socket offloaded to a device? The test tls_is_skb_tx_device_offloaded()
 * makes in 6.12, spelled out because 6.1 only has the socket variant of it.
 */
static bool tlsnic_skb_offloaded(const struct sk_buff *skb)
{
	struct sock *sk = skb->sk;

	return sk && sk_fullsock(sk) &&
	       smp_load_acquire(&sk->sk_validate_xmit_skb) == &tls_validate_xmit_skb;
}

/*
 * The segment as it will leave the NIC: same headers, payload copied into fresh pages.
 * The original's payload pages are the kernel's plaintext records, which it keeps for
 * retransmissions (and tls_get_record()), so they must not be encrypted in place.
 */
static struct sk_buff *tlsnic_copy_for_wire(struct sk_buff *skb, u32 hdrlen)
{
	u32 datalen = skb->len - hdrlen, off = hdrlen;
	struct sk_buff *nskb;
	int err, i;

	nskb = alloc_skb_with_frags(skb_headroom(skb) + hdrlen, datalen,
				    PAGE_ALLOC_COSTLY_ORDER, &err, GFP_ATOMIC);
	if (!nskb)
		return NULL;
	skb_reserve(nskb, skb_headroom(skb));	/* same offsets: skb_copy_header() keeps them */
	skb_put(nskb, hdrlen);
	nskb->data_len = datalen;
	nskb->len += datalen;
	skb_copy_header(nskb, skb);
	if (skb_copy_bits(skb, 0, nskb->data, hdrlen))
		goto fail;
	for (i = 0; i < skb_shinfo(nskb)->nr_frags; i++) {
		skb_frag_t *frag = &skb_shinfo(nskb)->frags[i];

		if (skb_copy_bits(skb, off, skb_frag_address(frag), skb_frag_size(frag)))
			goto fail;
		off += skb_frag_size(frag);
	}
	return nskb;
fail:
	kfree_skb(nskb);
	return NULL;
}

/* The payload changed: make sure the checksum will be computed over the new bytes. */
static void tlsnic_fix_csum(struct sk_buff *skb)
{
	u32 len = skb->len - skb_transport_offset(skb);
	struct tcphdr *th = tcp_hdr(skb);

	/* CHECKSUM_PARTIAL (what TCP gives a HW_CSUM device): "hardware" sums it later */
	if (skb->ip_summed == CHECKSUM_PARTIAL)
		return;
	skb->ip_summed = CHECKSUM_PARTIAL;
	skb->csum_start = skb_transport_header(skb) - skb->head;
	skb->csum_offset = offsetof(struct tcphdr, check);
	if (ip_hdr(skb)->version == 4)
		th->check = ~tcp_v4_check(len, ip_hdr(skb)->saddr, ip_hdr(skb)->daddr, 0);
	else
		th->check = ~tcp_v6_check(len, &ipv6_hdr(skb)->saddr, &ipv6_hdr(skb)->daddr, 0);
}

/* Fast path: the segment is the one the engine expects. Called with flow->lock held. */
static struct sk_buff *tlsnic_encrypt(struct tlsnic_priv *priv, struct tlsnic_flow *flow,
				      struct sk_buff *skb, u32 hdrlen, u32 seq, u32 datalen)
{
	u64 t0 = ktime_get_ns();
	struct sk_buff *nskb = tlsnic_copy_for_wire(skb, hdrlen);
	int err = 0, i;

	/* the copy stands for the NIC's DMA: emulation cost, counted apart from the crypto */
	tlsnic_count(priv, TLSNIC_TX_TLS_COPY_NS, ktime_get_ns() - t0);
	if (!nskb) {
		tlsnic_count(priv, TLSNIC_TX_NOMEM, 1);
		return NULL;
	}
	t0 = ktime_get_ns();
	for (i = 0; i < skb_shinfo(nskb)->nr_frags && !err; i++) {
		skb_frag_t *frag = &skb_shinfo(nskb)->frags[i];

		err = tlsnic_engine_process(&flow->eng, skb_frag_address(frag),
					    skb_frag_size(frag));
	}
	tlsnic_count(priv, TLSNIC_TX_TLS_ENCRYPT_NS, ktime_get_ns() - t0);
	if (flow->eng.corrupted) {
		tlsnic_count(priv, TLSNIC_TX_TLS_CORRUPTED_TAGS, flow->eng.corrupted);
		flow->eng.corrupted = 0;
	}
	if (err) {
		/* not a record where one was due: the engine is lost until resynced */
		tlsnic_count(priv, TLSNIC_TX_TLS_BAD_STREAM, 1);
		flow->synced = false;
		kfree_skb(nskb);
		return NULL;
	}
	flow->expected_seq = seq + datalen;
	tlsnic_fix_csum(nskb);
	tlsnic_count(priv, TLSNIC_TX_TLS_ENCRYPTED_PACKETS,
		     skb_is_gso(skb) ? skb_shinfo(skb)->gso_segs : 1);
	tlsnic_count(priv, TLSNIC_TX_TLS_ENCRYPTED_BYTES, datalen);
	return nskb;
}

/*
 * mlx5: find the record holding seq, replay its bytes from the record start up to seq
 * through the engine (the driver DUMPs them to the NIC), then encrypt the segment.
 * Returns the encrypted copy, skb itself (plaintext from before the offload), or NULL
 * (drop). Called with flow->lock held.
 */
static struct sk_buff *tlsnic_rebuild(struct tlsnic_priv *priv, struct tlsnic_flow *flow,
				      struct sk_buff *skb, u32 hdrlen, u32 seq, u32 datalen)
{
	struct tls_offload_context_tx *octx = tls_offload_ctx_tx(tls_get_ctx(skb->sk));
	struct tlsnic_piece pieces[MAX_SKB_FRAGS];
	struct tls_record_info *record;
	enum tlsnic_sync verdict = TLSNIC_SYNC_FAIL;
	u32 left = 0, sync_len = 0, o, n;
	int npieces = 0, i, err = 0;
	unsigned long flags;
	u64 rcd_sn = 0, t0;

	/* the record list changes as ACKs arrive: hold its lock while taking page refs */
	spin_lock_irqsave(&octx->lock, flags);
	record = tls_get_record(octx, seq, &rcd_sn);
	if (record)
		verdict = tlsnic_sync_classify(seq, datalen, tls_record_start_seq(record),
					       tls_record_is_start_marker(record));
	if (verdict == TLSNIC_SYNC_OK) {
		sync_len = seq - tls_record_start_seq(record);
		for (left = sync_len, i = 0; left && i < record->num_frags; i++) {
			skb_frag_t *frag = &record->frags[i];

			n = min_t(u32, left, skb_frag_size(frag));
			pieces[npieces].page = skb_frag_page(frag);
			pieces[npieces].off = skb_frag_off(frag);
			pieces[npieces].len = n;
			get_page(pieces[npieces].page);
			npieces++;
			left -= n;
		}
	}
	spin_unlock_irqrestore(&octx->lock, flags);

	if (verdict == TLSNIC_SYNC_SKIP) {
		tlsnic_count(priv, TLSNIC_TX_TLS_SKIP_NO_SYNC_DATA, 1);
		return skb;
	}
	if (verdict == TLSNIC_SYNC_FAIL || left) {
		tlsnic_count(priv, TLSNIC_TX_TLS_DROP_NO_SYNC_DATA, 1);
		err = -ENODATA;
		goto put_pages;
	}

	tlsnic_engine_sync(&flow->eng, rcd_sn);
	t0 = ktime_get_ns();
	for (i = 0; i < npieces && !err; i++) {
		/* page by page through the scratch page: the record's pages stay plaintext */
		for (o = 0; o < pieces[i].len && !err; o += n) {
			u32 at = pieces[i].off + o;

			n = min_t(u32, pieces[i].len - o, PAGE_SIZE - offset_in_page(at));
			memcpy_from_page(flow->scratch, pieces[i].page + (at >> PAGE_SHIFT),
					 offset_in_page(at), n);
			err = tlsnic_engine_process(&flow->eng, flow->scratch, n);
		}
		tlsnic_count(priv, TLSNIC_TX_TLS_DUMP_PACKETS, 1);
		tlsnic_count(priv, TLSNIC_TX_TLS_DUMP_BYTES, pieces[i].len);
	}
	tlsnic_count(priv, TLSNIC_TX_TLS_DUMP_NS, ktime_get_ns() - t0);
	tlsnic_count(priv, TLSNIC_TX_TLS_RESYNC_BYTES, sync_len);
	if (err)
		tlsnic_count(priv, TLSNIC_TX_TLS_BAD_STREAM, 1);

put_pages:
	for (i = 0; i < npieces; i++)
		put_page(pieces[i].page);
	if (err) {
		flow->synced = false;
		return NULL;
	}
	flow->expected_seq = seq;
	flow->synced = true;
	return tlsnic_encrypt(priv, flow, skb, hdrlen, seq, datalen);
}

/*
 * Encrypt what the kernel offloaded to this device. Returns the skb to put on the wire:
 * skb itself when the NIC has nothing to do, a new one (skb consumed) when it encrypted,
 * or NULL when it dropped the segment (skb freed).
 */
struct sk_buff *tlsnic_tls_xmit(struct tlsnic_priv *priv, struct sk_buff *skb)
{
	struct tlsnic_flow *flow;
	struct sk_buff *out = NULL;
	u32 hdrlen, datalen, seq;
	bool fallback = false;

	if (!tlsnic_skb_offloaded(skb))
		return skb;
	flow = *tlsnic_flow_slot(tls_get_ctx(skb->sk));
	if (unlikely(!flow || flow->dev != priv->dev))
		return tls_encrypt_skb(skb);	/* not ours: never let plaintext out */
	hdrlen = skb_tcp_all_headers(skb);
	datalen = skb->len - hdrlen;
	if (!datalen)
		return skb;	/* pure ACK, FIN: no record bytes */
	seq = ntohl(tcp_hdr(skb)->seq);

	/*
	 * skb pins the socket, hence the kTLS context and the flow: it is freed only after
	 * the flow lock is released (freeing it may release the socket, then the flow).
	 */
	spin_lock(&flow->lock);
	flow->eng.corrupt_every = READ_ONCE(priv->corrupt_every);
	if (!after(seq + datalen, flow->start_seq)) {
		/* sent before kTLS was set up (the handshake's tail): plaintext by design */
		tlsnic_count(priv, TLSNIC_TX_TLS_SKIP_NO_SYNC_DATA, 1);
		out = skb;
	} else if (flow->synced && seq == flow->expected_seq) {
		out = tlsnic_encrypt(priv, flow, skb, hdrlen, seq, datalen);
	} else {
		tlsnic_count(priv, TLSNIC_TX_TLS_OOO, 1);
		switch (READ_ONCE(priv->strategy)) {
		case TLSNIC_MLX5:
			out = tlsnic_rebuild(priv, flow, skb, hdrlen, seq, datalen);
			break;
		case TLSNIC_NFP:
			fallback = true;
			/* the kernel WARNs on a second request before it resynced us */
			if ((!flow->synced || tlsnic_seq_jumped_ahead(seq, flow->expected_seq)) &&
			    !tls_offload_tx_resync_pending(skb->sk)) {
				flow->synced = false;
				tls_offload_tx_resync_request(skb->sk, seq, flow->expected_seq);
				tlsnic_count(priv, TLSNIC_TX_TLS_RESYNC_REQ, 1);
			}
			break;
		default:
			tlsnic_count(priv, TLSNIC_TX_TLS_DROP_NO_SYNC_DATA, 1);
			break;
		}
	}
	spin_unlock(&flow->lock);

	if (fallback) {
		tlsnic_count(priv, TLSNIC_TLS_TX_FALLBACK, 1);
		out = tls_encrypt_skb(skb);	/* consumes skb */
		if (!out)
			tlsnic_count(priv, TLSNIC_TLS_TX_NO_FALLBACK, 1);
		return out;
	}
	if (out != skb) {
		if (out)
			consume_skb(skb);
		else
			kfree_skb(skb);
	}
	return out;
}
