// SPDX-License-Identifier: GPL-2.0
/*
 * The record engine of the emulated TLS TX offload NIC (see tlsnic_engine.h). Pure logic:
 * built into the module and, unchanged, into the user-space harness.
 */
#ifdef __KERNEL__
#include <linux/errno.h>
#include <linux/string.h>
#else
#include <errno.h>
#include <string.h>
#endif

#include "tlsnic_engine.h"

static u32 tlsnic_min(u32 a, u32 b)
{
	return a < b ? a : b;
}

static void put_be32(u8 *p, u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void put_be64(u8 *p, u64 v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, (u32)v);
}

static u32 get_be32(const u8 *p)
{
	return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3];
}

void tlsnic_gcm_ctr_block(u8 out[TLSNIC_BLOCK], const u8 j0[TLSNIC_BLOCK], u32 index)
{
	/* inc32 wraps the low 32 bits only; 1 is the first payload block, J0 masks the tag */
	memcpy(out, j0, TLSNIC_BLOCK);
	put_be32(out + 12, get_be32(j0 + 12) + 1 + index);
}

void tlsnic_tls12_nonce(u8 nonce[12], const u8 salt[TLSNIC_SALT_LEN],
			const u8 explicit_iv[TLSNIC_EXPLICIT_IV_LEN])
{
	memcpy(nonce, salt, TLSNIC_SALT_LEN);
	memcpy(nonce + TLSNIC_SALT_LEN, explicit_iv, TLSNIC_EXPLICIT_IV_LEN);
}

void tlsnic_tls12_aad(u8 aad[TLSNIC_AAD_LEN], u64 rec_sn, u8 type, u16 plain_len)
{
	put_be64(aad, rec_sn);
	aad[8] = type;
	aad[9] = 3;	/* TLS 1.2 is version 3.3 on the wire */
	aad[10] = 3;
	aad[11] = plain_len >> 8;
	aad[12] = plain_len & 0xff;
}

int tlsnic_tls12_record_len(const u8 hdr[TLSNIC_HDR_LEN], u32 *rec_len)
{
	u32 body = (u32)hdr[3] << 8 | hdr[4];

	if (hdr[1] != 3 || hdr[2] != 3)
		return -EBADMSG;
	if (body < TLSNIC_EXPLICIT_IV_LEN + TLSNIC_TAG_LEN || body > TLSNIC_MAX_RECORD_BODY)
		return -EBADMSG;
	*rec_len = TLSNIC_HDR_LEN + body;
	return 0;
}

enum tlsnic_sync tlsnic_sync_classify(u32 seq, u32 len, u32 rec_start, bool start_marker)
{
	bool ends_before = tlsnic_seq_before(seq + len - 1, rec_start);

	if (start_marker)
		return ends_before ? TLSNIC_SYNC_SKIP : TLSNIC_SYNC_FAIL;
	/* the record list starts after seq: those bytes were acked and their records freed */
	if (tlsnic_seq_before(seq, rec_start))
		return TLSNIC_SYNC_FAIL;
	return TLSNIC_SYNC_OK;
}

/* -- AES-GCM in pieces ------------------------------------------------------------- */

static int ghash_zero_pad(struct tlsnic_gcm *g, u32 len_so_far)
{
	u32 pad = (TLSNIC_BLOCK - len_so_far % TLSNIC_BLOCK) % TLSNIC_BLOCK;

	if (!pad)
		return 0;
	memset(g->block, 0, TLSNIC_BLOCK);
	return tlsnic_prim_ghash_update(g->prim, g->block, pad);
}

int tlsnic_gcm_begin(struct tlsnic_gcm *g, const u8 nonce[12], const u8 *aad, u32 aad_len)
{
	int err;

	memcpy(g->j0, nonce, 12);
	put_be32(g->j0 + 12, 1);
	g->aad_len = aad_len;
	g->done = 0;
	err = tlsnic_prim_ghash_init(g->prim);
	if (!err && aad_len)
		err = tlsnic_prim_ghash_update(g->prim, aad, aad_len);
	if (!err)
		err = ghash_zero_pad(g, aad_len);	/* the ciphertext starts on a block */
	return err;
}

int tlsnic_gcm_encrypt(struct tlsnic_gcm *g, u8 *buf, u32 len)
{
	u8 ctr[TLSNIC_BLOCK];
	u32 skip, n;
	int err;

	if (!len)
		return 0;
	/*
	 * A piece that starts inside a block (the previous segment ended there) needs the
	 * rest of that block's keystream: encrypt a zero block with its counter and use the
	 * tail. The GHASH stream absorbs the partial block itself.
	 */
	skip = g->done % TLSNIC_BLOCK;
	if (skip) {
		n = tlsnic_min(len, TLSNIC_BLOCK - skip);
		memset(g->block, 0, TLSNIC_BLOCK);
		memcpy(g->block + skip, buf, n);
		tlsnic_gcm_ctr_block(ctr, g->j0, g->done / TLSNIC_BLOCK);
		err = tlsnic_prim_ctr(g->prim, ctr, g->block, TLSNIC_BLOCK);
		if (err)
			return err;
		memcpy(buf, g->block + skip, n);
		err = tlsnic_prim_ghash_update(g->prim, buf, n);
		if (err)
			return err;
		g->done += n;
		buf += n;
		len -= n;
		if (!len)
			return 0;
	}
	tlsnic_gcm_ctr_block(ctr, g->j0, g->done / TLSNIC_BLOCK);
	err = tlsnic_prim_ctr(g->prim, ctr, buf, len);
	if (!err)
		err = tlsnic_prim_ghash_update(g->prim, buf, len);
	if (!err)
		g->done += len;
	return err;
}

int tlsnic_gcm_finish(struct tlsnic_gcm *g, u8 tag[TLSNIC_TAG_LEN])
{
	int err, i;

	err = ghash_zero_pad(g, g->done);
	if (err)
		return err;
	put_be64(g->block, (u64)g->aad_len * 8);	/* len(A) || len(C), in bits */
	put_be64(g->block + 8, (u64)g->done * 8);
	err = tlsnic_prim_ghash_update(g->prim, g->block, TLSNIC_BLOCK);
	if (!err)
		err = tlsnic_prim_ghash_final(g->prim, tag);
	if (err)
		return err;
	/* T = GHASH ^ E(K, J0): the keystream of counter block J0 itself */
	memset(g->block, 0, TLSNIC_BLOCK);
	err = tlsnic_prim_ctr(g->prim, g->j0, g->block, TLSNIC_BLOCK);
	if (err)
		return err;
	for (i = 0; i < TLSNIC_TAG_LEN; i++)
		tag[i] ^= g->block[i];
	return 0;
}

/* -- TLS 1.2 records in a TCP stream ----------------------------------------------- */

void tlsnic_engine_init(struct tlsnic_engine *e, void *prim, const u8 salt[TLSNIC_SALT_LEN],
			u64 rec_sn)
{
	memset(e, 0, sizeof(*e));
	e->gcm.prim = prim;
	memcpy(e->salt, salt, TLSNIC_SALT_LEN);
	e->rec_sn = rec_sn;
}

void tlsnic_engine_sync(struct tlsnic_engine *e, u64 rec_sn)
{
	e->rec_sn = rec_sn;
	e->rec_off = 0;
	e->rec_len = 0;
}

static u32 payload_end(const struct tlsnic_engine *e)
{
	return e->rec_len - TLSNIC_TAG_LEN;
}

static int record_seal(struct tlsnic_engine *e)
{
	int err = tlsnic_gcm_finish(&e->gcm, e->tag);

	if (err)
		return err;
	/* the fault is a function of the record number, so a retransmission repeats it */
	if (e->corrupt_every && e->rec_sn % e->corrupt_every == 0) {
		e->tag[TLSNIC_TAG_LEN - 1] ^= 0x01;
		e->corrupted++;
	}
	return 0;
}

static int record_begin(struct tlsnic_engine *e)
{
	u8 aad[TLSNIC_AAD_LEN], nonce[12];
	int err;

	err = tlsnic_tls12_record_len(e->prepend, &e->rec_len);
	if (err)
		return err;
	tlsnic_tls12_aad(aad, e->rec_sn, e->prepend[0],
			 e->rec_len - TLSNIC_PREPEND_LEN - TLSNIC_TAG_LEN);
	tlsnic_tls12_nonce(nonce, e->salt, e->prepend + TLSNIC_HDR_LEN);
	err = tlsnic_gcm_begin(&e->gcm, nonce, aad, TLSNIC_AAD_LEN);
	if (!err && e->rec_len - TLSNIC_TAG_LEN == TLSNIC_PREPEND_LEN)
		err = record_seal(e);	/* empty payload: the tag is due next */
	return err;
}

int tlsnic_engine_process(struct tlsnic_engine *e, u8 *buf, u32 len)
{
	u32 n;
	int err;

	while (len) {
		if (e->rec_off < TLSNIC_PREPEND_LEN) {
			/* header and explicit nonce go out unchanged; keep them for AAD and nonce */
			n = tlsnic_min(len, TLSNIC_PREPEND_LEN - e->rec_off);
			memcpy(e->prepend + e->rec_off, buf, n);
			e->rec_off += n;
			if (e->rec_off == TLSNIC_PREPEND_LEN) {
				err = record_begin(e);
				if (err)
					return err;
			}
		} else if (e->rec_off < payload_end(e)) {
			n = tlsnic_min(len, payload_end(e) - e->rec_off);
			err = tlsnic_gcm_encrypt(&e->gcm, buf, n);
			if (err)
				return err;
			e->rec_off += n;
			if (e->rec_off == payload_end(e)) {
				err = record_seal(e);
				if (err)
					return err;
			}
		} else {
			/* the tag placeholder, possibly split across segments */
			n = tlsnic_min(len, e->rec_len - e->rec_off);
			memcpy(buf, e->tag + (e->rec_off - payload_end(e)), n);
			e->rec_off += n;
			if (e->rec_off == e->rec_len) {
				e->rec_sn++;
				e->rec_off = 0;
			}
		}
		buf += n;
		len -= n;
	}
	return 0;
}
