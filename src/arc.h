/*
 * arc.h - ARC sealing (RFC 8617) with OpenSSL: one ARC set (ARC-Seal,
 * ARC-Message-Signature, ARC-Authentication-Results) per relayed message,
 * continuing the i= numbering of an incoming chain and recording whether
 * that chain validated (cv=none|pass|fail).
 *
 * Validating an incoming chain needs the signers' key records: the caller
 * passes a synchronous TXT lookup (arc_txt_fn), e.g. authres_dns_txt()
 * on a worker thread's libunbound context. Safe to call from several
 * threads at once (keys are read-only after arc_key_load()).
 */
#ifndef PETREL_ARC_H
#define PETREL_ARC_H

#include <stddef.h>
#include <openssl/evp.h>

#define ARC_INSTANCE_MAX	50	/* RFC 8617 4.2.1 */

enum arc_cv { ARC_CV_NONE = 0, ARC_CV_PASS, ARC_CV_FAIL };

struct arc_key {
	char		*domain;	/* d= */
	char		*selector;	/* s= */
	EVP_PKEY	*pkey;		/* RSA */
};

/* arc_txt_fn - the TXT record of name holding a DKIM key into *txt_r
 * (malloc'd): 0 found, 1 no such record, -1 temporary failure */
typedef int (*arc_txt_fn)(void *arg, const char *name, char **txt_r);

/* arc_key_load - read an RSA private key (PEM) from key_file */
int arc_key_load(const char *domain, const char *selector,
    const char *key_file, struct arc_key **k_r, char **err_r);
void arc_key_free(struct arc_key *);

/* arc_chain_validate - validate msg's existing ARC chain: ARC_CV_NONE
 * (no ARC headers), ARC_CV_PASS or ARC_CV_FAIL (*why_r static text).
 * *n_r: highest instance found. */
int arc_chain_validate(const char *msg, size_t len, arc_txt_fn txt,
    void *txt_arg, int *n_r, const char **why_r);

/* arc_seal_message - the ARC set to prepend for this hop, in the order it
 * goes on top of msg: ARC-Seal, ARC-Message-Signature, ARC-Authentication-
 * Results (CRLF-ended, folded). msg already carries this hop's DKIM-
 * Signature fields, which the AMS signs. authres: this hop's results
 * ("spf=pass smtp.mailfrom=..; dkim=..."), authserv_id: our host name.
 * 0, or -1 with *err_r (malloc'd). *cv_r (may be NULL): the cv= used. */
int arc_seal_message(const struct arc_key *k, const char *msg, size_t len,
    const char *authres, const char *authserv_id, arc_txt_fn txt,
    void *txt_arg, char **headers_r, int *cv_r, char **err_r);

#endif
