/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The record engine of the emulated TLS TX offload NIC: what the "hardware" does to the
 * TCP payload bytes of an offloaded flow, in the order the NIC sees them.
 *
 * kTLS hands the NIC TLS 1.2 records in plaintext: 5-byte header, 8-byte explicit nonce,
 * payload, 16-byte tag placeholder. The engine keeps only what a NIC keeps between
 * segments (where it is in the current record, the record number, the running GHASH and
 * the record's pre-counter block) and so can encrypt a record cut into segments at any
 * byte. It is pure logic: no kernel API, so the same file builds into the module and into
 * a user-space harness (user/harness.c) that checks it against known answers. AES and
 * GHASH themselves are primitives the caller provides (tlsnic_prim_*, below).
 */
#ifndef TLSNIC_ENGINE_H
#define TLSNIC_ENGINE_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdbool.h>
#include <stdint.h>
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
#endif

#define TLSNIC_BLOCK		16
#define TLSNIC_HDR_LEN		5	/* type, version, length */
#define TLSNIC_EXPLICIT_IV_LEN	8	/* RFC 5288: nonce_explicit, sent in each record */
#define TLSNIC_PREPEND_LEN	(TLSNIC_HDR_LEN + TLSNIC_EXPLICIT_IV_LEN)
#define TLSNIC_SALT_LEN		4	/* RFC 5288: the implicit part of the nonce */
#define TLSNIC_TAG_LEN		16
#define TLSNIC_AAD_LEN		13	/* seq_num(8) type(1) version(2) length(2) */
/* RFC 5246 6.2.3: TLSCiphertext.length may not exceed 2^14 + 2048 */
#define TLSNIC_MAX_RECORD_BODY	(16384 + 2048)

/*
 * Primitives, provided by the module (tlsnic_crypto.c: the kernel's ctr(aes) and ghash)
 * or by the harness (OpenSSL's AES and a plain GHASH). @prim is the per-flow state.
 */
/* XOR the AES-CTR keystream that starts at counter block @ctr into @buf[0..len). */
int tlsnic_prim_ctr(void *prim, const u8 ctr[TLSNIC_BLOCK], u8 *buf, u32 len);
/* GHASH under the flow's hash key H, fed as a byte stream (partial blocks allowed). */
int tlsnic_prim_ghash_init(void *prim);
int tlsnic_prim_ghash_update(void *prim, const u8 *buf, u32 len);
/* Absorb the buffered partial block, if any, zero-padded; write the hash. */
int tlsnic_prim_ghash_final(void *prim, u8 out[TLSNIC_BLOCK]);

/* AES-GCM with a 96-bit nonce, fed in pieces (NIST SP 800-38D). */
struct tlsnic_gcm {
	void *prim;
	u8 j0[TLSNIC_BLOCK];	/* pre-counter block: nonce || 0x00000001 */
	u8 block[TLSNIC_BLOCK];	/* partial-block scratch; not on the stack: it may be sg-mapped */
	u32 aad_len;
	u32 done;		/* payload bytes encrypted so far */
};

int tlsnic_gcm_begin(struct tlsnic_gcm *g, const u8 nonce[12], const u8 *aad, u32 aad_len);
int tlsnic_gcm_encrypt(struct tlsnic_gcm *g, u8 *buf, u32 len);
int tlsnic_gcm_finish(struct tlsnic_gcm *g, u8 tag[TLSNIC_TAG_LEN]);

/* Counter block for payload block @index of a message: inc32(J0) applied 1 + @index times. */
void tlsnic_gcm_ctr_block(u8 out[TLSNIC_BLOCK], const u8 j0[TLSNIC_BLOCK], u32 index);
/* RFC 5288 3: nonce = salt(4) || nonce_explicit(8). */
void tlsnic_tls12_nonce(u8 nonce[12], const u8 salt[TLSNIC_SALT_LEN],
			const u8 explicit_iv[TLSNIC_EXPLICIT_IV_LEN]);
/* RFC 5246 6.2.3.3: additional_data = seq_num + type + version + length (of the plaintext). */
void tlsnic_tls12_aad(u8 aad[TLSNIC_AAD_LEN], u64 rec_sn, u8 type, u16 plain_len);
/*
 * Whole record length (header included) from a TLS 1.2 AES-GCM record header, or
 * -EBADMSG when the bytes cannot be one (wrong version, too short for nonce and tag,
 * longer than TLS allows): the engine is then not where it thinks it is in the stream.
 */
int tlsnic_tls12_record_len(const u8 hdr[TLSNIC_HDR_LEN], u32 *rec_len);

struct tlsnic_engine {
	struct tlsnic_gcm gcm;
	u64 rec_sn;		/* number of the record in progress (or the next one, at a boundary) */
	u32 rec_off;		/* bytes of that record seen so far; 0 at a record boundary */
	u32 rec_len;		/* its whole length, known once the header has gone by */
	u32 corrupt_every;	/* fault knob: corrupt the tag of records whose number % N == 0 */
	u32 corrupted;		/* tags corrupted so far (the caller drains it into a counter) */
	u8 salt[TLSNIC_SALT_LEN];
	u8 prepend[TLSNIC_PREPEND_LEN];	/* header and explicit nonce, gathered as they pass */
	u8 tag[TLSNIC_TAG_LEN];		/* the record's tag, once its payload has gone by */
};

void tlsnic_engine_init(struct tlsnic_engine *e, void *prim, const u8 salt[TLSNIC_SALT_LEN],
			u64 rec_sn);
/* Put the engine at the start of record @rec_sn (a resync at a record boundary). */
void tlsnic_engine_sync(struct tlsnic_engine *e, u64 rec_sn);
/*
 * Encrypt the next @len bytes of the flow's TCP payload in place: headers and nonces pass
 * unchanged, payload becomes ciphertext, tag placeholders become the tag. Returns 0 or a
 * negative errno (-EBADMSG: the bytes are not a record header where one was due), after
 * which the engine must be resynchronised before use.
 */
int tlsnic_engine_process(struct tlsnic_engine *e, u8 *buf, u32 len);

/* TCP sequence arithmetic (mod 2^32), as in include/net/tcp.h. */
static inline bool tlsnic_seq_before(u32 a, u32 b)
{
	return (s32)(a - b) < 0;
}

/*
 * What an mlx5-style NIC may do with a segment [seq, seq + len) that is not the one it
 * expected, given the record tls_get_record() found for seq (mlx5e_ktls_tx_handle_ooo):
 */
enum tlsnic_sync {
	TLSNIC_SYNC_OK,		/* rebuild state from the record start, then encrypt */
	TLSNIC_SYNC_SKIP,	/* all of it precedes the offload start: plaintext, send as is */
	TLSNIC_SYNC_FAIL,	/* no data to resync from (acked, or straddles the start): drop */
};

enum tlsnic_sync tlsnic_sync_classify(u32 seq, u32 len, u32 rec_start, bool start_marker);

/*
 * nfp's rule for asking the stack to resync: only when the segment jumps ahead of the
 * expected sequence (a segment was lost before the NIC), not for a retransmission.
 */
static inline bool tlsnic_seq_jumped_ahead(u32 seq, u32 expected)
{
	return seq != expected && seq - expected < 0xffffffffU / 4;
}

#endif /* TLSNIC_ENGINE_H */
