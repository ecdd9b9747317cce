// SPDX-License-Identifier: GPL-2.0
/*
 * User-space harness for the NIC's record engine (tlsnic_engine.c, built unchanged).
 * It supplies the primitives from OpenSSL's AES (EVP, CTR and ECB) and a bit-serial
 * GHASH (NIST SP 800-38D, Algorithm 1), and exposes the engine's pure functions as
 * commands so tests can compare them with a reference (Python's `cryptography`) and with
 * published AES-GCM vectors. Hex in, hex out:
 *
 *   harness gcm KEY NONCE AAD PLAINTEXT PIECE     -> CIPHERTEXT TAG
 *   harness records KEY SALT REC_SN CORRUPT_EVERY SPLITS  < stream hex  -> stream hex
 *   harness aad REC_SN TYPE PLAIN_LEN | nonce SALT EXPLICIT | ctrblock J0 INDEX
 *   harness reclen HEADER | classify SEQ LEN REC_START MARKER | ahead SEQ EXPECTED
 *
 * SPLITS is a comma-separated list of segment sizes, used in turn until the stream ends.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "../tlsnic_engine.h"

struct prim {
	const EVP_CIPHER *ctr;
	u8 key[32];
	u8 h[TLSNIC_BLOCK];	/* hash key: AES_K(0^128) */
	u8 y[TLSNIC_BLOCK];	/* running GHASH */
	u8 buf[TLSNIC_BLOCK];	/* partial input block */
	u32 buffered;
};

static void die(const char *what)
{
	fprintf(stderr, "harness: %s\n", what);
	exit(2);
}

static void gf128_mul(u8 x[TLSNIC_BLOCK], const u8 y[TLSNIC_BLOCK])
{
	u8 z[TLSNIC_BLOCK] = { 0 }, v[TLSNIC_BLOCK];
	int i, j, lsb;

	memcpy(v, y, sizeof(v));
	for (i = 0; i < 128; i++) {
		if (x[i / 8] & (0x80 >> (i % 8)))
			for (j = 0; j < TLSNIC_BLOCK; j++)
				z[j] ^= v[j];
		lsb = v[15] & 1;
		for (j = 15; j > 0; j--)
			v[j] = (v[j] >> 1) | (u8)(v[j - 1] << 7);
		v[0] >>= 1;
		if (lsb)
			v[0] ^= 0xe1;
	}
	memcpy(x, z, sizeof(z));
}

int tlsnic_prim_ctr(void *prim, const u8 ctr[TLSNIC_BLOCK], u8 *buf, u32 len)
{
	struct prim *p = prim;
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int out = 0, ok;

	ok = c && EVP_EncryptInit_ex(c, p->ctr, NULL, p->key, ctr) &&
	     EVP_EncryptUpdate(c, buf, &out, buf, (int)len);
	EVP_CIPHER_CTX_free(c);
	return ok && (u32)out == len ? 0 : -EIO;
}

int tlsnic_prim_ghash_init(void *prim)
{
	struct prim *p = prim;

	memset(p->y, 0, sizeof(p->y));
	p->buffered = 0;
	return 0;
}

int tlsnic_prim_ghash_update(void *prim, const u8 *data, u32 len)
{
	struct prim *p = prim;

	while (len--) {
		p->buf[p->buffered++] = *data++;
		if (p->buffered == TLSNIC_BLOCK) {
			for (int j = 0; j < TLSNIC_BLOCK; j++)
				p->y[j] ^= p->buf[j];
			gf128_mul(p->y, p->h);
			p->buffered = 0;
		}
	}
	return 0;
}

int tlsnic_prim_ghash_final(void *prim, u8 out[TLSNIC_BLOCK])
{
	struct prim *p = prim;

	if (p->buffered) {
		memset(p->buf + p->buffered, 0, TLSNIC_BLOCK - p->buffered);
		for (int j = 0; j < TLSNIC_BLOCK; j++)
			p->y[j] ^= p->buf[j];
		gf128_mul(p->y, p->h);
		p->buffered = 0;
	}
	memcpy(out, p->y, TLSNIC_BLOCK);
	return 0;
}

static size_t unhex(const char *hex, u8 *out, size_t max)
{
	size_t n = strlen(hex), i;
	unsigned int byte;

	if (n % 2 || n / 2 > max)
		die("bad hex argument (odd length or too long)");
	for (i = 0; i < n / 2; i++) {
		if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
			die("bad hex digit");
		out[i] = (u8)byte;
	}
	return n / 2;
}

static void puthex(const u8 *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static void prim_setup(struct prim *p, const char *key_hex)
{
	size_t klen = unhex(key_hex, p->key, sizeof(p->key));
	const EVP_CIPHER *ecb;
	EVP_CIPHER_CTX *c;
	u8 zero[TLSNIC_BLOCK] = { 0 };
	int out = 0;

	if (klen != 16 && klen != 32)
		die("key must be 16 or 32 bytes (AES-128 or AES-256)");
	p->ctr = klen == 16 ? EVP_aes_128_ctr() : EVP_aes_256_ctr();
	ecb = klen == 16 ? EVP_aes_128_ecb() : EVP_aes_256_ecb();
	c = EVP_CIPHER_CTX_new();
	if (!c || !EVP_EncryptInit_ex(c, ecb, NULL, p->key, NULL) ||
	    !EVP_CIPHER_CTX_set_padding(c, 0) ||
	    !EVP_EncryptUpdate(c, p->h, &out, zero, TLSNIC_BLOCK) || out != TLSNIC_BLOCK)
		die("OpenSSL AES failed");
	EVP_CIPHER_CTX_free(c);
}

static u8 *read_stdin_hex(size_t *len)
{
	size_t cap = 1 << 16, n = 0, out = 0;
	char *text = malloc(cap);
	u8 *bytes;
	int ch;

	if (!text)
		die("out of memory");
	while ((ch = getchar()) != EOF) {
		if (ch == '\n' || ch == ' ')
			continue;
		if (n + 1 >= cap) {
			cap *= 2;
			text = realloc(text, cap);
			if (!text)
				die("out of memory");
		}
		text[n++] = (char)ch;
	}
	text[n] = 0;
	bytes = malloc(n / 2 + 1);
	if (!bytes)
		die("out of memory");
	out = unhex(text, bytes, n / 2 + 1);
	free(text);
	*len = out;
	return bytes;
}

static int cmd_gcm(char **argv)
{
	static u8 nonce[12], aad[4096], buf[1 << 16];
	struct prim p;
	struct tlsnic_gcm g = { .prim = &p };
	u8 tag[TLSNIC_TAG_LEN];
	size_t aad_len, len, off, piece = strtoul(argv[4], NULL, 0);

	prim_setup(&p, argv[0]);
	if (unhex(argv[1], nonce, sizeof(nonce)) != 12)
		die("nonce must be 12 bytes");
	aad_len = unhex(argv[2], aad, sizeof(aad));
	len = unhex(argv[3], buf, sizeof(buf));
	if (tlsnic_gcm_begin(&g, nonce, aad, (u32)aad_len))
		die("gcm_begin failed");
	for (off = 0; off < len; off += piece ? piece : len) {
		size_t n = piece && len - off > piece ? piece : len - off;

		if (tlsnic_gcm_encrypt(&g, buf + off, (u32)n))
			die("gcm_encrypt failed");
	}
	if (tlsnic_gcm_finish(&g, tag))
		die("gcm_finish failed");
	puthex(buf, len);
	printf(" ");
	puthex(tag, sizeof(tag));
	printf("\n");
	return 0;
}

static int cmd_records(char **argv)
{
	struct prim p;
	struct tlsnic_engine e;
	u8 salt[TLSNIC_SALT_LEN], *stream;
	size_t len, off = 0, nsplits = 0, turn = 0;
	unsigned long splits[64];
	char *s = argv[4], *end;
	int err;

	prim_setup(&p, argv[0]);
	if (unhex(argv[1], salt, sizeof(salt)) != TLSNIC_SALT_LEN)
		die("salt must be 4 bytes");
	tlsnic_engine_init(&e, &p, salt, strtoull(argv[2], NULL, 0));
	e.corrupt_every = (u32)strtoul(argv[3], NULL, 0);
	while (*s && nsplits < 64) {
		splits[nsplits] = strtoul(s, &end, 0);
		if (end == s || !splits[nsplits])
			die("SPLITS must be positive sizes separated by commas");
		nsplits++;
		s = *end == ',' ? end + 1 : end;
	}
	if (!nsplits)
		die("no SPLITS");
	stream = read_stdin_hex(&len);
	while (off < len) {
		size_t n = splits[turn++ % nsplits];

		if (n > len - off)
			n = len - off;
		err = tlsnic_engine_process(&e, stream + off, (u32)n);
		if (err) {
			printf("error %d at %zu\n", err, off);
			return 3;
		}
		off += n;
	}
	puthex(stream, len);
	printf("\n%u %llu %u\n", e.corrupted, (unsigned long long)e.rec_sn, e.rec_off);
	free(stream);
	return 0;
}

int main(int argc, char **argv)
{
	u8 a[TLSNIC_BLOCK], b[TLSNIC_BLOCK], out[TLSNIC_BLOCK];
	u32 rec_len;

	if (argc < 2)
		die("usage: harness gcm|records|aad|nonce|ctrblock|reclen|classify|ahead ARGS...");
	if (!strcmp(argv[1], "gcm") && argc == 7)
		return cmd_gcm(argv + 2);
	if (!strcmp(argv[1], "records") && argc == 7)
		return cmd_records(argv + 2);
	if (!strcmp(argv[1], "aad") && argc == 5) {
		tlsnic_tls12_aad(out, strtoull(argv[2], NULL, 0), (u8)strtoul(argv[3], NULL, 0),
				 (u16)strtoul(argv[4], NULL, 0));
		puthex(out, TLSNIC_AAD_LEN);
	} else if (!strcmp(argv[1], "nonce") && argc == 4) {
		if (unhex(argv[2], a, TLSNIC_SALT_LEN) != TLSNIC_SALT_LEN ||
		    unhex(argv[3], b, TLSNIC_EXPLICIT_IV_LEN) != TLSNIC_EXPLICIT_IV_LEN)
			die("salt is 4 bytes, explicit nonce 8");
		tlsnic_tls12_nonce(out, a, b);
		puthex(out, 12);
	} else if (!strcmp(argv[1], "ctrblock") && argc == 4) {
		if (unhex(argv[2], a, TLSNIC_BLOCK) != TLSNIC_BLOCK)
			die("J0 is 16 bytes");
		tlsnic_gcm_ctr_block(out, a, (u32)strtoul(argv[3], NULL, 0));
		puthex(out, TLSNIC_BLOCK);
	} else if (!strcmp(argv[1], "reclen") && argc == 3) {
		if (unhex(argv[2], a, TLSNIC_HDR_LEN) != TLSNIC_HDR_LEN)
			die("a header is 5 bytes");
		if (tlsnic_tls12_record_len(a, &rec_len))
			printf("EBADMSG");
		else
			printf("%u", rec_len);
	} else if (!strcmp(argv[1], "classify") && argc == 6) {
		static const char *const names[] = { "ok", "skip", "fail" };

		printf("%s", names[tlsnic_sync_classify((u32)strtoul(argv[2], NULL, 0),
							 (u32)strtoul(argv[3], NULL, 0),
							 (u32)strtoul(argv[4], NULL, 0),
							 strtoul(argv[5], NULL, 0) != 0)]);
	} else if (!strcmp(argv[1], "ahead") && argc == 4) {
		printf("%d", tlsnic_seq_jumped_ahead((u32)strtoul(argv[2], NULL, 0),
						     (u32)strtoul(argv[3], NULL, 0)));
	} else {
		die("unknown command or wrong number of arguments");
	}
	printf("\n");
	return 0;
}
