// SPDX-License-Identifier: GPL-2.0
/*
 * The record engine's primitives from the kernel crypto API: "ctr(aes)" for the keystream
 * and GHASH for the authenticator. GCM's one-shot AEAD ("gcm(aes)") cannot be used: a
 * NIC encrypts a record segment by segment, so it needs the keystream at any offset and a
 * GHASH it can carry from one segment to the next, which are exactly these two.
 *
 * GHASH comes from where the kernel has it. Up to 6.x it is the "ghash" shash
 * (crypto/ghash-generic.c, CONFIG_CRYPTO_GHASH). Linux 7.x removed that algorithm: GHASH
 * is a library (lib/crypto/gf128hash.c, CONFIG_CRYPTO_LIB_GF128HASH, <crypto/gf128hash.h>)
 * and gcm(aes) is "gcm_base(ctr(aes-lib),ghash-lib)"; crypto_alloc_shash("ghash") there
 * fails with ENOENT, which made every tls_dev_add fail and the kernel fall back to
 * software kTLS. The library needs no allocation and runs in any context.
 *
 * Both are synchronous (CRYPTO_ALG_ASYNC masked out) because they run in the transmit
 * path, with bottom halves off.
 */
#include <crypto/skcipher.h>
#include <linux/kconfig.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#if IS_REACHABLE(CONFIG_CRYPTO_LIB_GF128HASH)
#define TLSNIC_GHASH_LIB 1
#include <crypto/gf128hash.h>
#else
#include <crypto/hash.h>
#endif

#include "tlsnic.h"

struct tlsnic_prim {
	struct crypto_sync_skcipher *ctr;
#ifdef TLSNIC_GHASH_LIB
	struct ghash_key key;		/* H, prepared */
	struct ghash_ctx ctx;		/* the GHASH in progress for the current record */
#else
	struct crypto_shash *ghash;
	struct shash_desc *desc;	/* the GHASH in progress for the current record */
#endif
	u8 block[TLSNIC_BLOCK];		/* for H = AES_K(0^128), on the heap (sg-mapped) */
};

int tlsnic_prim_ctr(void *prim, const u8 ctr[TLSNIC_BLOCK], u8 *buf, u32 len)
{
	struct tlsnic_prim *p = prim;
	SYNC_SKCIPHER_REQUEST_ON_STACK(req, p->ctr);
	struct scatterlist sg;
	u8 iv[TLSNIC_BLOCK];	/* ctr(aes) advances the IV it is given: use a copy */
	int err;

	/* buf is linear memory in one page or kmalloc'ed, never the stack (vmap'ed) */
	memcpy(iv, ctr, TLSNIC_BLOCK);
	sg_init_one(&sg, buf, len);
	skcipher_request_set_sync_tfm(req, p->ctr);
	skcipher_request_set_callback(req, 0, NULL, NULL);
	skcipher_request_set_crypt(req, &sg, &sg, len, iv);
	err = crypto_skcipher_encrypt(req);
	skcipher_request_zero(req);
	return err;
}

#ifdef TLSNIC_GHASH_LIB
int tlsnic_prim_ghash_init(void *prim)
{
	struct tlsnic_prim *p = prim;

	ghash_init(&p->ctx, &p->key);
	return 0;
}

int tlsnic_prim_ghash_update(void *prim, const u8 *buf, u32 len)
{
	struct tlsnic_prim *p = prim;

	ghash_update(&p->ctx, buf, len);
	return 0;
}

int tlsnic_prim_ghash_final(void *prim, u8 out[TLSNIC_BLOCK])
{
	struct tlsnic_prim *p = prim;

	ghash_final(&p->ctx, out);	/* zeroes the context */
	return 0;
}

/* H = AES_K(0^128) is in p->block. */
static int tlsnic_prim_ghash_setkey(struct tlsnic_prim *p)
{
	ghash_preparekey(&p->key, p->block);
	return 0;
}

static void tlsnic_prim_ghash_free(struct tlsnic_prim *p)
{
}

static int tlsnic_prim_ghash_alloc(struct tlsnic_prim *p)
{
	return 0;
}
#else
int tlsnic_prim_ghash_init(void *prim)
{
	struct tlsnic_prim *p = prim;

	return crypto_shash_init(p->desc);
}

int tlsnic_prim_ghash_update(void *prim, const u8 *buf, u32 len)
{
	struct tlsnic_prim *p = prim;

	return crypto_shash_update(p->desc, buf, len);
}

int tlsnic_prim_ghash_final(void *prim, u8 out[TLSNIC_BLOCK])
{
	struct tlsnic_prim *p = prim;

	return crypto_shash_final(p->desc, out);
}

/* H = AES_K(0^128) is in p->block. */
static int tlsnic_prim_ghash_setkey(struct tlsnic_prim *p)
{
	return crypto_shash_setkey(p->ghash, p->block, TLSNIC_BLOCK);
}

static void tlsnic_prim_ghash_free(struct tlsnic_prim *p)
{
	if (p->desc)
		kfree_sensitive(p->desc);
	if (!IS_ERR_OR_NULL(p->ghash))
		crypto_free_shash(p->ghash);
}

static int tlsnic_prim_ghash_alloc(struct tlsnic_prim *p)
{
	p->ghash = crypto_alloc_shash("ghash", 0, CRYPTO_ALG_ASYNC);
	if (IS_ERR(p->ghash))
		return PTR_ERR(p->ghash);
	p->desc = kzalloc(sizeof(*p->desc) + crypto_shash_descsize(p->ghash), GFP_KERNEL);
	if (!p->desc)
		return -ENOMEM;
	p->desc->tfm = p->ghash;
	return 0;
}
#endif

void tlsnic_prim_free(struct tlsnic_prim *p)
{
	if (!p)
		return;
	tlsnic_prim_ghash_free(p);
	if (!IS_ERR_OR_NULL(p->ctr))
		crypto_free_sync_skcipher(p->ctr);
	kfree_sensitive(p);
}

/* Process context (tls_dev_add): may sleep, and may load the crypto modules. */
struct tlsnic_prim *tlsnic_prim_alloc(const u8 *key, unsigned int key_len)
{
	struct tlsnic_prim *p;
	u8 zero[TLSNIC_BLOCK] = {};
	int err;

	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return ERR_PTR(-ENOMEM);
	p->ctr = crypto_alloc_sync_skcipher("ctr(aes)", 0, 0);
	if (IS_ERR(p->ctr)) {
		err = PTR_ERR(p->ctr);
		goto fail;
	}
	err = tlsnic_prim_ghash_alloc(p);
	if (err)
		goto fail;
	err = crypto_sync_skcipher_setkey(p->ctr, key, key_len);
	if (err)
		goto fail;
	/* the hash key is the encryption of the zero block: counter block 0, zero data */
	err = tlsnic_prim_ctr(p, zero, p->block, TLSNIC_BLOCK);
	if (!err)
		err = tlsnic_prim_ghash_setkey(p);
	memzero_explicit(p->block, sizeof(p->block));
	if (err)
		goto fail;
	return p;
fail:
	tlsnic_prim_free(p);
	return ERR_PTR(err);
}
